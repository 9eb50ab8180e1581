import pytest
import torch

from asr_stream.config import EncoderConfig
from asr_stream.encoder import build_encoder
from asr_stream.encoder.chunk_transformer import chunk_causal_mask

from ..conftest import noise_audio


def own(chunk_ms=160, left_chunks=-1, seed=0):
    torch.manual_seed(seed)
    enc = build_encoder(EncoderConfig(chunk_ms=chunk_ms, d_model=32, n_layers=2, n_heads=2, dropout=0.0, left_chunks=left_chunks))
    with torch.no_grad():  # non-trivial normalisation so the buffers are exercised too
        enc.feat_mean.normal_(-5, 1)
        enc.feat_std.uniform_(1, 3)
    return enc.eval()


def stream_all(enc, wave, groups):
    """Stream ``wave`` (1, N*cs) in groups of chunks (e.g. [1, 3, 2]) and concatenate the outputs."""
    st, outs, i = enc.init_state(1), [], 0
    cs = enc.chunk_samples
    for g in groups:
        o, st = enc.stream(wave[:, i * cs : (i + g) * cs], st)
        outs.append(o)
        i += g
    return torch.cat(outs, 1)


def test_mask_docstring_example():
    m = chunk_causal_mask(6, 0, 0, 2, -1) == 0
    expected = torch.tensor([[1, 1, 0, 0, 0, 0]] * 2 + [[1, 1, 1, 1, 0, 0]] * 2 + [[1] * 6] * 2, dtype=torch.bool)
    assert torch.equal(m, expected)


@pytest.mark.parametrize("chunk_ms", [160, 320])
@pytest.mark.parametrize("groups", [[1] * 6, [2, 1, 3], [6]])
def test_own_streaming_equals_full_forward(chunk_ms, groups):
    enc = own(chunk_ms)
    wave = torch.from_numpy(noise_audio(6 * chunk_ms / 1000))[None]
    with torch.no_grad():
        full = enc(wave)
        streamed = stream_all(enc, wave, groups)
    assert full.shape == (1, 6 * enc.frames_per_chunk, 32)
    assert (streamed - full).abs().max().item() <= 1e-5


def test_own_limited_left_context_streaming_equals_full():
    enc = own(160, left_chunks=2)
    wave = torch.from_numpy(noise_audio(1.6))[None]
    with torch.no_grad():
        full, streamed = enc(wave), stream_all(enc, wave, [1] * 10)
    assert (streamed - full).abs().max().item() <= 1e-5
    st = enc.init_state(1)
    for i in range(10):
        _, st = enc.stream(wave[:, i * 2560 : (i + 1) * 2560], st)
    assert st.kv[0][0].shape[2] == 2 * enc.frames_per_chunk  # cache bounded by left_chunks


@pytest.mark.parametrize("left_chunks", [-1, 2])
def test_stream_many_equals_separate_streams_at_different_points(left_chunks):
    """Rows at different chunk counts (cached lengths 0, 1, 3 and 5 chunks) in one call == one stream() per row,
    outputs and the states carried on (positions, masks, padding and the left-context trim are per row)."""
    enc = own(160, left_chunks=left_chunks)
    cs = enc.chunk_samples
    waves = [torch.from_numpy(noise_audio(1.6, seed=30 + b))[None] for b in range(4)]
    ahead = [0, 1, 3, 5]  # chunks each stream has read before the shared calls
    with torch.no_grad():
        sep, many = [], []
        for b, w in enumerate(waves):
            st = enc.init_state(1)
            for c in range(ahead[b]):
                _, st = enc.stream(w[:, c * cs : (c + 1) * cs], st)
            sep.append(st)
            many.append(st)
        for step in range(3):  # three shared calls: the states that stream_many returns are carried on
            rows = [w[:, (ahead[b] + step) * cs : (ahead[b] + step + 1) * cs] for b, w in enumerate(waves)]
            out, many = enc.stream_many(torch.cat(rows), many)
            for b in range(4):
                want, sep[b] = enc.stream(rows[b], sep[b])
                assert (out[b : b + 1] - want).abs().max().item() <= 1e-5, (step, b)
                assert many[b].chunks == sep[b].chunks
                assert many[b].kv[0][0].shape == sep[b].kv[0][0].shape
                assert (many[b].kv[-1][0] - sep[b].kv[-1][0]).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="2 rows of audio but 4 states"):
        enc.stream_many(torch.zeros(2, cs), many)


def test_chunk_outputs_final_once_computed():
    enc = own(160)
    a = torch.from_numpy(noise_audio(1.6, seed=1))[None]
    b = a.clone()
    b[:, 5 * 2560 :] = torch.randn_like(b[:, 5 * 2560 :])  # change audio from chunk 5 on
    with torch.no_grad():
        fa, fb = enc(a), enc(b)
    F = enc.frames_per_chunk
    assert torch.equal(fa[:, : 5 * F], fb[:, : 5 * F])
    assert not torch.allclose(fa[:, 5 * F :], fb[:, 5 * F :])


def test_bad_chunk_shape():
    enc = own(160)
    with pytest.raises(ValueError, match="n \\* 2560"):
        enc(torch.zeros(1, 1000))
    with pytest.raises(ValueError, match="multiple of 4 hops"):
        enc.set_chunk_ms(100)


@pytest.fixture(scope="module")
def tiny_hubert_dir(tmp_path_factory):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    path = tmp_path_factory.mktemp("tiny-hubert")
    HubertModel(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("left_ms", [0, 200])
def test_hf_wrapper_streaming_equals_chunkwise_full(tiny_hubert_dir, left_ms):
    enc = build_encoder(EncoderConfig(kind="hf", hf_name_or_path=str(tiny_hubert_dir), chunk_ms=320, hf_left_context_ms=left_ms)).eval()
    assert enc.frames_per_chunk == 16 and enc.dim == 32
    wave = torch.from_numpy(noise_audio(1.6))[None]
    with torch.no_grad():
        full = enc(wave)
        streamed = stream_all(enc, wave, [1, 2, 1, 1])
    assert full.shape == (1, 5 * 16, 32)
    assert (streamed - full).abs().max().item() <= 1e-5
    # later audio never changes an earlier chunk's output
    b = wave.clone()
    b[:, 3 * 5120 :] = 0.3
    with torch.no_grad():
        fb = enc(b)
    assert torch.equal(full[:, : 3 * 16], fb[:, : 3 * 16])
    # left context matters iff configured: chunk 1's output depends on chunk 0's audio
    c = wave.clone()
    c[:, :5120] = 0.0
    with torch.no_grad():
        fc = enc(c)
    assert torch.allclose(full[:, 16:32], fc[:, 16:32]) == (left_ms == 0)


def test_hf_wrapper_errors(tmp_path):
    with pytest.raises(ValueError, match="needs hf_name_or_path"):
        build_encoder(EncoderConfig(kind="hf"))
    with pytest.raises(ValueError, match="cannot load"):
        build_encoder(EncoderConfig(kind="hf", hf_name_or_path=str(tmp_path / "nowhere")))


def test_append_kv_reuses_spare_storage_and_copies_when_it_must():
    from asr_stream.kv import append_kv

    a, b, c = (torch.randn(1, 2, n, 4) for n in (8, 8, 8))
    ab, buf = append_kv(a, b, None)  # a is not a view of any storage: copied once into a new one
    assert torch.equal(ab, torch.cat([a, b], 2)) and buf.shape[2] >= 32
    abc, buf2 = append_kv(ab, c, buf)
    assert buf2 is buf and abc.data_ptr() == buf.data_ptr()  # appended in place
    assert torch.equal(abc, torch.cat([a, b, c], 2))
    trimmed = abc[:, :, -8:]  # a left_chunks trim is not a prefix of the storage: the next append starts a new one
    t2, buf3 = append_kv(trimmed, a, buf)
    assert buf3 is not buf and torch.equal(t2, torch.cat([c, a], 2)) and torch.equal(abc, torch.cat([a, b, c], 2))


def test_stream_many_padding_never_reads_uninitialised_memory():
    """Rows with less cached context than the longest are padded in new storage that is not zero-filled as a whole;
    with torch filling uninitialised memory with NaN, the outputs still equal separate calls."""
    enc = own(160)
    cs = enc.chunk_samples
    waves = [torch.from_numpy(noise_audio(0.8, seed=40 + b))[None] for b in range(3)]
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # torch.empty then fills floats with NaN
    try:
        with torch.no_grad():
            states = [enc.init_state(1) for _ in waves]
            for c in range(2):  # rows 1 and 2 read 1 and 2 chunks ahead; row 0 has none cached
                for b in range(1, 3):
                    if c < b:
                        _, states[b] = enc.stream(waves[b][:, c * cs : (c + 1) * cs], states[b])
            rows = [w[:, b * cs : (b + 1) * cs] for b, w in enumerate(waves)]
            out, _ = enc.stream_many(torch.cat(rows), states)
            assert not out.isnan().any()
            for b in range(3):
                want, _ = enc.stream(rows[b], states[b])
                assert (out[b : b + 1] - want).abs().max().item() <= 1e-5
    finally:
        torch.use_deterministic_algorithms(prev)


def test_encoder_threads_apply_to_its_calls_only():
    """encoder.threads: the streaming call runs with that many torch threads and gives the same output; the
    caller's thread count is restored."""
    from asr_stream.encoder.base import cpu_threads

    enc = own(160)
    w = torch.from_numpy(noise_audio(0.64, seed=3))[None]
    before = torch.get_num_threads()
    seen = []
    hook = enc.layers[0].register_forward_hook(lambda *a: seen.append(torch.get_num_threads()))
    try:
        with torch.no_grad():
            one, _ = enc.stream(w, enc.init_state(1))
            enc.threads = before + 1
            two, _ = enc.stream(w, enc.init_state(1))
            many, _ = enc.stream_many(torch.cat([w, w]), [enc.init_state(1), enc.init_state(1)])
    finally:
        hook.remove()
        enc.threads = None
    assert seen == [before, before + 1, before + 1] and torch.get_num_threads() == before
    assert (one - two).abs().max().item() <= 1e-5 and (many[1:] - one).abs().max().item() <= 1e-5
    with cpu_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_encoder_compute_dtype_bfloat16():
    """encoder.compute_dtype = bfloat16: streaming calls compute under autocast and hand on float32. The output
    moves (it is really computed in bf16) but stays close to float32's, the cache works across calls, one call for
    many streams matches the one-stream calls as closely, and whole-utterance forward (training) is untouched."""
    enc = own(160)
    w = torch.from_numpy(noise_audio(0.96, seed=4))[None]
    with torch.no_grad():
        ref = stream_all(enc, w, [1, 1, 1, 1, 1, 1])
        full32 = enc(w)
        enc.compute_dtype = torch.bfloat16
        try:
            got = stream_all(enc, w, [1, 1, 1, 1, 1, 1])
            one, st1 = enc.stream(w[:, : 2 * enc.chunk_samples], enc.init_state(1))
            many, st2 = enc.stream_many(torch.cat([w[:, : 2 * enc.chunk_samples]] * 2), [enc.init_state(1)] * 2)
            full = enc(w)
        finally:
            enc.compute_dtype = None
    assert got.dtype == torch.float32 and one.dtype == torch.float32 and many.dtype == torch.float32
    rel = (got - ref).abs().max().item() / ref.abs().max().item()
    assert 0 < rel < 0.05, rel  # bf16 keeps 8 bits of mantissa: differences of about 1 %, never none
    assert st1.kv[0][0].dtype == torch.bfloat16  # the cache is kept in the compute dtype
    assert (many - torch.cat([one, one])).abs().max().item() / one.abs().max().item() < 0.05
    assert torch.equal(full, full32)
