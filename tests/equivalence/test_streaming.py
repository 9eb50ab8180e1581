"""The heart of the suite: streaming through one KV cache == one masked training forward."""

import numpy as np
import pytest
import torch

from asr_stream import decoder as dec
from asr_stream.groups import AUDIO, PROMPT, TARGET, additive_mask, allowed, training_layout, units_done, visible_chunks
from asr_stream.model import Batch
from asr_stream.streaming import StreamingSession

from ..conftest import SENTENCES, TOL, noise_audio


def forward_logits(model, wave: np.ndarray, tokens, **kw) -> torch.Tensor:
    with torch.no_grad():
        out = model(Batch(torch.from_numpy(wave)[None], torch.tensor([len(wave)]), [tokens]), **kw)
    return out.target_logits[0]


def stream_logits(model, wave: np.ndarray, tokens, block: int, **kw) -> tuple[torch.Tensor, StreamingSession]:
    kw.setdefault("max_tokens_per_s", 100.0)  # the length guard must not cut a teacher-forced transcript
    s = StreamingSession(model, **kw)
    s.teacher_force(tokens)
    for i in range(0, len(wave), block):
        s.push(wave[i : i + block])
    s.finish()
    return torch.stack(s.logits), s


def assert_streams_like_training(model, wave: np.ndarray, tokens, vocab: int, block: int = 1000,
                                 **kw) -> StreamingSession:
    """Streaming ``wave`` with ``tokens`` forced gives the training forward's logits (one row per token and EOS) to
    the suite's tolerance; returns the session for further checks."""
    full = forward_logits(model, wave, tokens, **kw)
    streamed, s = stream_logits(model, wave, tokens, block, **kw)
    assert streamed.shape == full.shape == (len(tokens) + 1, vocab)
    assert (streamed - full).abs().max().item() <= TOL
    return s


@pytest.mark.parametrize("encoder", ["own", "whisper", "whisper-lookahead"])
@pytest.mark.parametrize("chunk_ms", [160, 320])
@pytest.mark.parametrize("phi", [0.0, 0.5, 256.0])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("mode", ["group", "interleaved"])
def test_teacher_forced_streaming_equals_training_forward(make_model, codec, mode, k, phi, chunk_ms, encoder):
    model = make_model(chunk_ms, encoder=encoder)
    wave = noise_audio(1.9, seed=k)  # not a whole number of chunks: exercises tail padding
    tokens = codec.encode(SENTENCES[1])
    assert len(tokens) > len(SENTENCES[1].split())  # some words span several tokens
    full = forward_logits(model, wave, tokens, mode=mode, k=k, phi=phi)
    for block in (1000, 4321):  # blocks that do not align with chunks (2560 / 5120 samples)
        streamed, _ = stream_logits(model, wave, tokens, block, mode=mode, k=k, phi=phi)
        assert streamed.shape == full.shape == (len(tokens) + 1, len(codec))
        assert (streamed - full).abs().max().item() <= TOL


@pytest.mark.parametrize("mode", ["group", "interleaved"])
def test_whisper_lookahead_reads_one_chunk_of_silence_after_the_audio_and_hears_the_last_chunk(make_model, codec, mode):
    """Whisper with one chunk of look-ahead: the encoder's output lags the audio by a chunk, so an utterance is one
    chunk longer (training pads it with zeros, finish() reads them) and its last real chunk comes out of the
    encoder in that extra chunk: the last row's logits (k = 20: every row reads the whole utterance) move when only
    the last (partial) chunk's audio changes, and streaming still equals the training forward. Word times are audio
    read, capped at the audio's end: the chunk of zeros never pushes them past it."""
    model = make_model(160, encoder="whisper-lookahead")
    cs = model.chunk_samples
    wave = noise_audio(1.9, seed=5)  # 11.875 chunks of 160 ms: 12 chunks of audio, 13 read
    assert model.num_chunks(len(wave)) == 13
    tokens = codec.encode(SENTENCES[0])
    full = forward_logits(model, wave, tokens, mode=mode, k=20, phi=0.0)
    streamed, s = stream_logits(model, wave, tokens, 3000, mode=mode, k=20, phi=0.0)
    assert s.state.chunks_read == 13 and streamed.shape == full.shape
    assert (streamed - full).abs().max().item() <= TOL
    quiet = wave.copy()
    quiet[11 * cs :] = 0.0  # the last real chunk silenced
    changed, _ = stream_logits(model, quiet, tokens, 3000, mode=mode, k=20, phi=0.0)
    assert (changed[-1] - streamed[-1]).abs().max().item() > 1e-3
    assert s.words and max(w.time_ms for w in s.words) <= len(wave) / 16.0
    assert s.words[-1].time_ms == len(wave) / 16.0


@pytest.mark.parametrize("mode", ["group", "interleaved"])
def test_ctc_embedding_projector_streams_like_training(make_model, codec, mode):
    """projector.ctc_embed adds CTC posteriors x token embeddings per chunk: still one pass, same logits."""
    model = make_model(320, ctc_embed=True)
    plain = make_model(320)
    wave = noise_audio(1.9, seed=7)
    with torch.no_grad():
        enc = model.encoder(torch.from_numpy(np.pad(wave, (0, 6 * model.chunk_samples - len(wave))))[None])
        assert (model.project(enc) - model.projector(enc)).abs().max() > 1e-3  # the CTC term is really added
    tokens = codec.encode(SENTENCES[2])
    full = forward_logits(model, wave, tokens, mode=mode, k=2, phi=0.5)
    assert (full - forward_logits(plain, wave, tokens, mode=mode, k=2, phi=0.5)).abs().max() > 1e-3
    streamed, _ = stream_logits(model, wave, tokens, 3000, mode=mode, k=2, phi=0.5)
    assert (streamed - full).abs().max().item() <= TOL


def test_ctc_embedding_needs_the_ctc_head(codec):
    from dataclasses import replace

    from asr_stream.model import SpeechLLM
    from asr_stream.presets import test_sized

    with pytest.raises(ValueError, match="ctc_weight > 0"):
        SpeechLLM(replace(test_sized(ctc_embed=True), ctc_weight=0.0), codec)


@pytest.mark.parametrize("mode", ["group", "interleaved"])
def test_prompt_and_padded_batch(make_model, codec, mode):
    """With a text prompt, and utterances of different lengths padded into one training batch."""
    model = make_model(160, prompt="TRANSCRIBE")
    waves = [noise_audio(1.3, seed=5), noise_audio(0.7, seed=6)]
    toks = [codec.encode(SENTENCES[0]), codec.encode(SENTENCES[3])]
    T = max(len(w) for w in waves)
    batch = Batch(torch.stack([torch.from_numpy(np.pad(w, (0, T - len(w)))) for w in waves]), torch.tensor([len(w) for w in waves]), toks)
    with torch.no_grad():
        out = model(batch, mode=mode, k=2, phi=0.5)
    for b in range(2):
        streamed, _ = stream_logits(model, waves[b], toks[b], 3000, mode=mode, k=2, phi=0.5)
        assert (streamed - out.target_logits[b]).abs().max().item() <= TOL


def test_batch_mode_after_end_of_audio_equals_offline(make_model, codec):
    """With k larger than the utterance every row is written after the end of the audio: then all three
    batch-streaming variants see exactly what an offline (batch) model sees."""
    model = make_model(160)
    wave = noise_audio(0.8, seed=3)
    tokens = codec.encode(SENTENCES[2])
    offline = forward_logits(model, wave, tokens, mode="batch", k=None)
    for reencode in ("none", "position", "kv"):
        streamed, _ = stream_logits(model, wave, tokens, 2000, mode="batch", k=50, reencode=reencode)
        assert (streamed - offline).abs().max().item() <= TOL, reencode


def batch_reference(model, codec, wave: np.ndarray, tokens, k: int, reencode: str) -> torch.Tensor:
    """Per target row i, the logits a batch-mode stream with ``reencode`` gives it when it writes it, computed
    without the session: one masked decoder forward per number of chunks read.

    Row i is written once v_i = min(k + c_i, N) chunks are read; by then every earlier target row has been
    recomputed at the batch positions of that prefix (S + r, S = source read so far): with ``position``
    each row keeps its own visibility v_r, with ``kv`` every row sees all v_i chunks (a batch model's
    view of the prefix). So row i's logits are those of the batch layout of the first v_i chunks and
    rows 0..i.
    """
    P, E, cs = len(model.prompt_ids), model.embeds_per_chunk, model.chunk_samples
    N = model.num_chunks(len(wave))
    padded = np.zeros(N * cs, np.float32)
    padded[: len(wave)] = wave  # the stream zero-pads its last chunk the same way
    units = units_done(codec.boundaries(tokens))  # rows BOS, y_0.. y_{T-1}: T + 1 rows
    read_at = [visible_chunks(k, c, N) for c in units]
    out = [None] * len(units)
    with torch.no_grad():
        src = model.embed_audio(torch.from_numpy(padded)[None])[1][0]  # (N*E, H); chunks never change
        prompt = model.embed_tokens(model.prompt_ids) if P else src.new_zeros(0, src.shape[-1])
        rows_in = model.embed_tokens([codec.bos_id] + list(tokens))
        for n in sorted(set(read_at)):
            last = max(i for i, r in enumerate(read_at) if r == n)
            els = training_layout("batch", P, n, E, units[: last + 1], k if reencode == "position" else None)
            by_kind = {PROMPT: prompt, AUDIO: src[: n * E], TARGET: rows_in}
            x = torch.stack([by_kind[int(kd)][int(i)] for kd, i in zip(els.kind, els.index)])
            mask = additive_mask(allowed("batch", els, els))
            logits = dec.run(model.llm, x[None], mask[None], els.position[None])[0]
            for i in range(last + 1):
                if read_at[i] == n:
                    out[i] = logits[int(torch.nonzero((els.kind == TARGET) & (els.index == i)))]
    return torch.stack(out)


@pytest.mark.parametrize("reencode", ["position", "kv"])
def test_batch_reencoding_with_target_rows_equals_a_reference_without_the_session(make_model, codec, reencode):
    """Small k: most target rows are written while audio still comes, so every later chunk re-encodes them.
    Each row's logits at the time it is written equal :func:`batch_reference` (built from groups' layouts
    and one decoder forward per chunk step, no session)."""
    model = make_model(160, prompt="TRANSCRIBE")
    wave = noise_audio(2.5, seed=4)  # 16 chunks
    tokens = codec.encode(SENTENCES[0])  # 9 words
    k = 2
    N = model.num_chunks(len(wave))
    early = [c for c in units_done(codec.boundaries(tokens)) if k + c < N]
    assert len(early) >= len(tokens) // 2  # rows written before the last chunks: re-encoded afterwards
    ref = batch_reference(model, codec, wave, tokens, k, reencode)
    streamed, s = stream_logits(model, wave, tokens, 1000, mode="batch", k=k, reencode=reencode)
    assert streamed.shape == ref.shape == (len(tokens) + 1, len(codec))
    assert (streamed - ref).abs().max().item() <= TOL
    assert s.state.decoder_positions > len(model.prompt_ids) + N * model.embeds_per_chunk + len(tokens) + 1
    # the reference tells re-encoding from none: without it, the early rows' logits are far off
    plain, _ = stream_logits(model, wave, tokens, 1000, mode="batch", k=k, reencode="none")
    assert (plain - ref).abs().max().item() > 1000 * TOL


def word_rows(codec, tokens):
    """Row indices predicting each word's tokens (row i predicts y_i), from end-of-word flags."""
    rows, j = {}, 0
    for i, b in enumerate(codec.boundaries(tokens)):
        rows.setdefault(j, []).append(i)
        j += int(b)
    return rows


@pytest.mark.parametrize("k", [1, 2])
def test_visibility_of_word_j(make_model, codec, k):
    """Word j (0-based) is predicted from the first k + j chunks: chunks 0 .. k+j-1 (the issue's
    "chunk k + j" counted from 1). Changing any later chunk leaves its logits alone; changing the
    last visible chunk changes them. Checked on the streaming session."""
    model = make_model(160)
    cs = model.chunk_samples
    tokens = codec.encode(SENTENCES[0])
    wave = noise_audio(12 * cs / 16000, seed=7)
    base, _ = stream_logits(model, wave, tokens, 2000, mode="group", k=k)
    rng = np.random.default_rng(0)
    for j, rows in word_rows(codec, tokens).items():
        last_visible = k + j - 1
        if last_visible + 1 >= 12:
            break
        later = wave.copy()
        later[(last_visible + 1) * cs :] = 0.2 * rng.standard_normal(len(wave) - (last_visible + 1) * cs)
        changed, _ = stream_logits(model, later, tokens, 2000, mode="group", k=k)
        assert torch.equal(changed[rows], base[rows]), f"word {j} saw audio after chunk {last_visible}"
        visible = wave.copy()
        visible[last_visible * cs : (last_visible + 1) * cs] *= -3.0
        changed, _ = stream_logits(model, visible, tokens, 2000, mode="group", k=k)
        assert (changed[rows] - base[rows]).abs().max() > 1e-4, f"word {j} did not see chunk {last_visible}"


def count_decoder_positions(model, fn) -> int:
    """Count positions through the first decoder layer with a forward hook."""
    seen = []
    layer = dec.decoder_layers(model.llm)[0]
    h = layer.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    try:
        fn()
    finally:
        h.remove()
    return sum(seen)


def test_group_mode_never_recomputes(make_model, codec):
    model = make_model(160, prompt="TRANSCRIBE")
    wave = noise_audio(2.5, seed=2)  # 16 chunks; 16 words, so with k=2 EOS comes after the last chunk
    tokens = codec.encode(SENTENCES[0] + " " + SENTENCES[1])
    P, N, E = len(model.prompt_ids), model.num_chunks(len(wave)), model.embeds_per_chunk
    results = {}
    for name, kw in {"group": dict(mode="group"), "interleaved": dict(mode="interleaved"),
                     "batch-none": dict(mode="batch"), "batch-position": dict(mode="batch", reencode="position"),
                     "batch-kv": dict(mode="batch", reencode="kv")}.items():
        box = {}
        results[name] = count_decoder_positions(model, lambda: box.setdefault("s", stream_logits(model, wave, tokens, 1600, k=2, **kw)))
        state = box["s"][1].state
        assert state.decoder_positions == results[name]  # the session's own counter agrees
        assert state.chunks_read == model.num_chunks(len(wave)) and state.ended
    source, target = P + N * E, len(tokens) + 1  # target inputs: BOS + transcript tokens (EOS is predicted, not fed)
    assert results["group"] == source + target
    assert results["interleaved"] == source + target
    assert results["batch-none"] == source + target
    assert results["batch-position"] > source + target
    # KV re-encoding recomputes the whole prefix at every chunk: quadratic in the number of chunks
    assert results["batch-kv"] > 5 * results["group"]
    print(f"\ndecoder positions over {N} chunks: " + ", ".join(f"{k}={v}" for k, v in results.items()))


def test_greedy_decoding_runs_and_times_are_monotonic(make_model):
    model = make_model(160)
    s = StreamingSession(model, k=2)
    words = []
    wave = noise_audio(2.0, seed=9)
    for i in range(0, len(wave), 777):
        words += s.push(wave[i : i + 777])
    words += s.finish()
    assert words == s.words
    times = [w.time_ms for w in words]
    assert times == sorted(times) and all(0 < t <= 2000 for t in times)
    # length guard: never more tokens than the guard allows for 2 s of audio
    assert len(s.state.tokens) <= int(12.0 * 2.08) + 8
    with pytest.raises(RuntimeError, match="after finish"):
        s.push(wave[:10])


def test_session_config_errors(make_model):
    model = make_model(160)
    with pytest.raises(ValueError, match="unknown mode"):
        StreamingSession(model, mode="zigzag")
    with pytest.raises(ValueError, match="batch' only"):
        StreamingSession(model, mode="group", reencode="kv")
    with pytest.raises(ValueError, match="k must be"):
        StreamingSession(model, k=0)
    with pytest.raises(ValueError, match="early_eos must be"):
        StreamingSession(model, early_eos="never")


def test_checkpoint_sliding_window_does_not_truncate_the_stream_cache(codec):
    """Phi-3-mini-4k sets sliding_window=2047: the streaming cache must still keep every slot, as training does."""
    from dataclasses import replace

    from asr_stream.model import SpeechLLM
    from asr_stream.presets import test_sized

    cfg = test_sized(160)
    cfg = replace(cfg, decoder=replace(cfg.decoder, tiny={**cfg.decoder.tiny, "sliding_window": 6}))
    torch.manual_seed(3)
    model = SpeechLLM(cfg, codec).eval()
    wave = noise_audio(1.9, seed=8)  # 12 chunks x 2 embeddings + ~20 target rows >> 6 slots
    tokens = codec.encode(SENTENCES[0])
    full = forward_logits(model, wave, tokens, mode="group", k=2, phi=0.0)
    streamed, s = stream_logits(model, wave, tokens, 1000, mode="group", k=2, phi=0.0)
    assert s.state.cache.get_seq_length() > 20
    assert (streamed - full).abs().max().item() <= TOL


def test_cache_appends_in_place_and_survives_slot_edits(make_model):
    """The KV cache grows into spare storage (no full copy per append) and stays right after cache_keep."""
    model = make_model(160)
    cache = dec.new_cache(model.llm)
    layer = cache.layers[0]
    H, D = 2, 16
    chunks = [torch.randn(1, H, n, D) for n in (3, 1, 2)]
    for c in chunks:
        layer.update(c, -c)
    ptr = layer.keys.data_ptr()
    layer.update(torch.randn(1, H, 1, D), torch.randn(1, H, 1, D))
    assert layer.keys.data_ptr() == ptr  # appended in place
    expect = torch.cat(chunks, dim=2)
    assert torch.equal(layer.keys[:, :, :6], expect) and torch.equal(layer.values[:, :, :6], -expect)
    keep = torch.tensor([0, 2, 5])
    dec.cache_keep(cache, keep)
    new = torch.randn(1, H, 2, D)
    layer.update(new, new)
    assert torch.equal(layer.keys, torch.cat([expect[:, :, keep], new], dim=2))


class ScriptedSession(StreamingSession):
    """Writes ``tokens`` then EOS like teacher forcing, but as greedy choices (so early_eos applies), records
    every row's logits, and optionally chooses EOS the first time row ``eos_at`` is asked."""

    def __init__(self, model, tokens, eos_at=None, **kw):
        super().__init__(model, max_tokens_per_s=100.0, **kw)
        self.script, self.eos_at, self.logits = list(tokens) + [model.codec.eos_id], eos_at, []

    def _choose(self, row, logits):
        if row == self.eos_at:
            self.eos_at = None
            return self.codec.eos_id
        return self.script[row]


def run_scripted(s, wave):
    for i in range(0, len(wave), 3000):
        s.push(wave[i : i + 3000])
    s.finish()
    return s


@pytest.mark.parametrize("mode", ["group", "interleaved"])
def test_early_eos_waits_for_audio_and_the_rejected_row_stays_invisible(make_model, codec, mode):
    """An EOS chosen while audio is still coming is not written (early_eos="wait"): the row is asked again
    once one more chunk is in, with k one larger from then on. The rejected slot stays in the cache but no
    later query sees it: the logits equal those of a stream that simply switched to k + 1 at that row."""
    model = make_model(320)
    wave = noise_audio(2.9, seed=3)
    tokens = codec.encode(SENTENCES[0])
    at = 2  # reject EOS at target row 2
    a = run_scripted(ScriptedSession(model, tokens, eos_at=at, mode=mode, k=1), wave)
    assert a.state.k_extra == 1 and a.state.ended
    assert a.text == codec.decode(tokens) and a.state.rows == len(tokens) + 1

    class SwitchK(ScriptedSession):  # the same schedule without the rejected row: k + 1 from row `at` on
        def _consume(self, logits):
            super()._consume(logits)
            if self.state.rows == at:
                self.state.k_extra = 1

    b = run_scripted(SwitchK(model, tokens, mode=mode, k=1), wave)
    la, lb = torch.stack(a.logits), torch.stack(b.logits)
    assert la.shape[0] == lb.shape[0] + 1  # one more ask: the rejected one
    assert (torch.cat([la[:at], la[at + 1 :]]) - lb).abs().max().item() <= TOL
    # it really saw more audio than the first ask did
    assert (la[at] - la[at + 1]).abs().max() > 1e-4

    stop = run_scripted(ScriptedSession(model, tokens, eos_at=at, mode=mode, k=1, early_eos="stop"), wave)
    assert stop.state.ended and stop.state.rows == at + 1 and stop.state.k_extra == 0
    assert stop.state.tokens == tokens[:at]
