"""Deprecated: the robustness test set's writer moved to :mod:`asr_stream.corpus.robust` (issue 29: the corpus tooling
out of the runtime's ``data/``). This module only re-exports its names for old imports; import from the new home.
The noise generators (``pink_noise``, ``nonspeech_clips``) are in :mod:`asr_stream.audio.noise`.
"""

from ..corpus.robust import *  # noqa: F401,F403
from ..audio.noise import nonspeech_clips, pink_noise  # noqa: F401
