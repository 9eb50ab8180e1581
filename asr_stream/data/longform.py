"""Deprecated: the long-form test recordings' writer moved to :mod:`asr_stream.corpus.longform` (issue 29: the corpus
tooling out of the runtime's ``data/``). This module only re-exports its names for old imports; import from the new
home.
"""

from ..corpus.longform import *  # noqa: F401,F403
