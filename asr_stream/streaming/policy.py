"""Read / write decisions. Pure: knows nothing of models; shares :func:`visible_chunks` with training."""

from __future__ import annotations

import sys
from enum import Enum

from ..groups import visible_chunks


class Action(Enum):
    READ = "read"  # wait for the next audio chunk
    WRITE = "write"  # feed the pending token and predict the next one
    STOP = "stop"  # nothing more will be written for this utterance


def max_rows(seconds_read: float, tokens_per_s: float, extra: int) -> int:
    """Length guard: target rows allowed after reading this much audio (never derived from a reference)."""
    return int(tokens_per_s * seconds_read) + extra


def wait_k_action(k: int, units_done: int, chunks_read: int, finished: bool, rows: int, row_limit: int, ended: bool) -> Action:
    """Wait-k over chunks: write target unit j once min(k + j, N) chunks are read.

    Before the end of the audio N is unknown, so a row may be written only when k + j chunks are in;
    after ``finish`` every remaining row sees all N chunks.
    """
    if ended:
        return Action.STOP
    if rows >= row_limit:
        return Action.STOP if finished else Action.READ
    if finished or chunks_read >= visible_chunks(k, units_done, sys.maxsize):
        return Action.WRITE
    return Action.READ
