import re

import pytest
import torch

from asr_stream.groups import AUDIO, PROMPT, TARGET, allowed, render, training_layout, units_done, visible_chunks
from asr_stream import groups


def test_docstring_example_is_what_the_code_computes(capsys):
    """The module docstring's worked example (units done, visibility, mask picture) is real output."""
    from ast import literal_eval

    from asr_stream.cli import masks

    doc = groups.__doc__
    rows = re.search(r"rows ``BOS ([^`]*)``", doc).group(1).split()
    c = literal_eval(re.search(r"units done c = (\[[^\]]*\])", doc).group(1))
    k, N, E = (int(x) for x in re.search(r"with k = (\d+) and N = (\d+) chunks of E = (\d+)", doc).groups())
    v = literal_eval(re.search(r"v = min\(k \+ c, N\) = (\[[^\]]*\])", doc).group(1))
    assert units_done([t.endswith("</w>") for t in rows]) == c == [0, 1, 1, 2]
    assert [visible_chunks(k, ci, N) for ci in c] == v
    block = doc.split("::\n\n", 1)[1].rstrip("\n").splitlines()
    assert all(line.startswith("    ") for line in block)
    picture = "\n".join(line[4:] for line in block)
    assert picture == render("group", training_layout("group", 0, N, E, c, k, 0.0))
    words = re.search(r'--words "([^"]*)"', doc).group(1)
    masks(mode="group", k=k, chunks=N, embeds_per_chunk=E, words=words)
    assert capsys.readouterr().out.rstrip("\n").endswith(picture)


def test_units_done_counts_prefix_boundaries():
    assert units_done([True, False, True, True]) == [0, 1, 1, 2, 3]
    assert units_done([]) == [0]


@pytest.mark.parametrize("k", [1, 2, 4])
def test_group_visibility_is_wait_k_per_word(k):
    N, E, P = 5, 2, 2
    # words of 1, 2 and 3 tokens (end-of-word flags), then EOS row
    flags = [True, False, True, False, False, True]
    units = units_done(flags)
    els = training_layout("group", P, N, E, units, k, 0.5)
    ok = allowed("group", els, els)
    word_of_label = [0, 1, 1, 2, 2, 2, 3]  # label of row i = y_i; row 6 predicts EOS (after 3 words)
    for row, j in enumerate(word_of_label):
        q = torch.nonzero((els.kind == TARGET) & (els.index == row)).item()
        seen_chunks = {int(c) for c in els.chunk[ok[q] & (els.kind == AUDIO)]}
        assert seen_chunks == set(range(min(k + j, N))), (row, j)
        assert ok[q][els.kind == PROMPT].all()  # prompt always visible
        tgt_seen = sorted(int(i) for i in els.index[ok[q] & (els.kind == TARGET)])
        assert tgt_seen == list(range(row + 1))  # causal over earlier target rows
    src = (els.kind == PROMPT) | (els.kind == AUDIO)
    assert not ok[src][:, els.kind == TARGET].any()  # source never attends to target
    s_ok = ok[src][:, src]
    assert torch.equal(s_ok, torch.tril(torch.ones_like(s_ok)))  # source is causal


@pytest.mark.parametrize("phi", [0.0, 0.5, 256.0, 3.25])
def test_group_positions(phi):
    els = training_layout("group", 3, 4, 2, [0, 1, 2], 2, phi)
    assert els.position[els.kind != TARGET].tolist() == list(range(3 + 8))
    assert els.position[els.kind == TARGET].tolist() == [phi, phi + 1, phi + 2]


def test_interleaved_is_arrival_order_and_causal():
    units = [0, 1, 1, 2]
    els = training_layout("interleaved", 1, 4, 2, units, 1, 0.0)
    assert els.position.tolist() == list(range(len(els)))
    kinds = "".join({PROMPT: "p", AUDIO: "a", TARGET: "t"}[int(c)] for c in els.kind)
    # k=1: row0 (v=1) after chunk 0; rows 1,2 (v=2) after chunk 1; row 3 (v=3) after chunk 2; then chunk 3
    assert kinds == "p" + "aa" + "t" + "aa" + "tt" + "aa" + "t" + "aa"
    ok = allowed("interleaved", els, els)
    assert torch.equal(ok, torch.tril(torch.ones_like(ok)))
    later_audio = torch.nonzero(els.kind == AUDIO).flatten()[-1]
    assert ok[later_audio][els.kind == TARGET].all()  # later chunks see earlier words: input-attention mismatch


def test_batch_offline_layout():
    els = training_layout("batch", 2, 3, 2, [0, 1, 2], None)
    assert els.position.tolist() == list(range(2 + 6 + 3))  # target starts right after the source
    ok = allowed("batch", els, els)
    tgt = els.kind == TARGET
    assert ok[tgt][:, els.kind == AUDIO].all()  # offline: every row sees the whole source


def test_errors():
    with pytest.raises(ValueError, match="k >= 1"):
        visible_chunks(0, 0, 3)
    with pytest.raises(ValueError, match="unknown mode"):
        training_layout("zigzag", 0, 1, 1, [0], 1)
