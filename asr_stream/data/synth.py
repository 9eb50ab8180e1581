"""Deprecated: the synthetic corpus moved to :mod:`asr_stream.corpus` (issue 29: corpus tooling out of the runtime's
``data/``), split by concern into :mod:`~asr_stream.corpus.text` (sentences), :mod:`~asr_stream.corpus.voices`,
:mod:`~asr_stream.corpus.plan` (:class:`SynthConfig`, :func:`plan_corpus`) and :mod:`~asr_stream.corpus.synth`
(speaking and the writers). This module only re-exports their names for old imports; import from the new homes.
"""

from ..corpus.plan import *  # noqa: F401,F403
from ..corpus.synth import *  # noqa: F401,F403
from ..corpus.text import *  # noqa: F401,F403
from ..corpus.voices import *  # noqa: F401,F403
