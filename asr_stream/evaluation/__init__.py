"""Evaluation. The metrics are pure functions of texts and times: WER (:mod:`.wer`, jiwer), SimulEval-style latency
(:mod:`.latency`), bootstrap intervals (:mod:`.stats`), formatted-text and biasing scores (:mod:`.formatted`,
:mod:`.biasing`). The modules that run a model are apart: :mod:`.runner` (one setting over a corpus, records written
as they are scored), :mod:`.sweep` (grids of settings), :mod:`.distributed` (one evaluation over several
processes). The ``eval`` and ``sweep`` commands live in :mod:`asr_stream.cli.evaluation`. Re-exported here: the
latency and WER functions."""

from asr_stream.evaluation import latency as _latency
from asr_stream.evaluation.latency import *  # noqa: F401,F403  (its __all__)
from asr_stream.evaluation.wer import normalize_text, wer_details

__all__ = sorted([*_latency.__all__, "normalize_text", "wer_details"])
