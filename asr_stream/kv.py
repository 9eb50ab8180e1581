"""Appending to a K/V cache without copying it: shared by the own encoder's cache and the decoder's cache."""

from __future__ import annotations

import torch


def append_kv(past: torch.Tensor | None, new: torch.Tensor, buf: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``cat([past, new], dim=2)`` without copying ``past`` when it is the prefix of ``buf`` with room to spare.

    Returns (the concatenation, as a view of the storage; the storage). Storage doubles when full, so a stream
    of n chunks copies O(n) frames in all instead of O(n^2). A state that is advanced twice (branching) must
    not reuse a storage: every path that rebuilds states (stacking, row slicing, trimming) gives a new one.
    """
    if past is None or past.shape[2] == 0:
        return new, new
    old, n = past.shape[2], past.shape[2] + new.shape[2]
    ours = (buf is not None and past.data_ptr() == buf.data_ptr() and past.stride() == buf.stride()
            and buf.shape[:2] == new.shape[:2] and buf.shape[3] == new.shape[3])
    if not ours or buf.shape[2] < n:
        buf = new.new_empty(new.shape[0], new.shape[1], max(2 * n, 64), new.shape[3])
        buf[:, :, :old] = past
    buf[:, :, old:n] = new
    return buf[:, :, :n], buf
