"""Deprecated: libespeak-ng through ctypes moved to :mod:`asr_stream.corpus.espeak` (issue 29: the corpus tooling out
of the runtime's ``data/``). This module only re-exports its names for old imports; import from the new home.
"""

from ..corpus.espeak import *  # noqa: F401,F403
