"""Deprecated: the speech engines (espeak-ng, Flite, Festival) moved to :mod:`asr_stream.corpus.engines` (issue 29: the
corpus tooling out of the runtime's ``data/``). This module only re-exports its names for old imports; import from
the new home.
"""

from ..corpus.engines import *  # noqa: F401,F403
