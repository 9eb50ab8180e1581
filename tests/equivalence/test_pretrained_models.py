"""The real-scale path at tiny scale (issue 14, "Defects found"): each test fails on the code before its fix.

Models here are built the way a hub download is read: a tiny random Phi-3 (or HuBERT) saved with
``save_pretrained`` to a local directory, loaded back with ``from_pretrained``.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from asr_stream.config import DecoderConfig, ModelConfig
from asr_stream.decoder import TextCodec
from asr_stream.groups import TARGET, training_layout, units_done
from asr_stream.model import Batch, SpeechLLM
from asr_stream.presets import test_sized
from asr_stream.streaming import StreamingSession
from asr_stream.streaming.batched import BatchedStreams

from ..conftest import SENTENCES, noise_audio
from .test_streaming import stream_logits

TINY_PHI3 = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def save_tiny_phi3(path, codec: TextCodec, seed: int = 0, **config) -> str:
    """A random Phi-3 with ``codec``'s tokenizer, saved as a hub download would be laid out."""
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(seed)
    conf = Phi3Config(vocab_size=len(codec), pad_token_id=codec.pad_id, bos_token_id=codec.bos_id,
                      eos_token_id=codec.eos_id, **{**TINY_PHI3, "max_position_embeddings": 4096, **config})
    Phi3ForCausalLM(conf).save_pretrained(path)
    codec.save(path)
    return str(path)


def pretrained_model(llm_dir: str, dtype: str = "float32", seed: int = 0, **changes) -> SpeechLLM:
    """test_sized's encoder and projector in front of the saved Phi-3 (loaded from its directory)."""
    base = test_sized(160)
    cfg = replace(base, decoder=DecoderConfig(name_or_path=llm_dir, dtype=dtype), **changes)
    torch.manual_seed(seed)
    return SpeechLLM(cfg).eval()


def forward_logits(model, wave: np.ndarray, tokens, **kw) -> torch.Tensor:
    with torch.no_grad():
        out = model(Batch(torch.from_numpy(wave)[None], torch.tensor([len(wave)]), [tokens]), **kw)
    return out.target_logits[0]


def stream_session(model, wave: np.ndarray, tokens, block: int = 3000, **kw) -> StreamingSession:
    return stream_logits(model, wave, tokens, block, **kw)[1]  # teacher-forced, as in test_streaming


# -- 1. a bf16 decoder ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def phi3_dir(tmp_path_factory, codec):
    # weights at 15x the default init scale: attention is sharp, so logits depend on positions and masks
    # (at the default 0.02 a random Phi-3 barely tells positions apart, and a bf16 tolerance would hide a
    # shifted position)
    return save_tiny_phi3(tmp_path_factory.mktemp("tiny-phi3"), codec, initializer_range=0.3)


def test_bf16_decoder_streams_and_equals_the_training_forward(phi3_dir, codec):
    """A Phi-3 loaded with dtype bfloat16 behind a float32 encoder and projector, outside autocast.

    Tolerance: bf16 keeps 8 significant bits (relative rounding 2^-8 ~ 0.4 %, ~3 decimal digits). The two
    paths compute the same function with matmuls of different shapes (one utterance vs. one chunk or one
    token per call), so each path rounds differently at every layer; the difference is a few bf16 ulps of
    the logits' scale, not of each logit. We allow 4 % of the largest |logit| (about 8 bf16 ulps at that
    scale; measured: 0.04 at a scale of 6, i.e. about one ulp), and require the greedy token to agree
    wherever the training forward's top two logits are further apart than that. A real mismatch changes
    logits by a good part of their scale: the test checks that target positions off by one exceed 3x the
    tolerance (measured: 4.1).
    """
    model = pretrained_model(phi3_dir, dtype="bfloat16")
    assert model.llm_dtype == torch.bfloat16 and next(model.encoder.parameters()).dtype == torch.float32
    wave = noise_audio(1.9, seed=1)
    tokens = codec.encode(SENTENCES[1])
    for mode, k, phi in (("group", 2, 0.0), ("group", 1, 256.0), ("interleaved", 2, 0.0)):
        full = forward_logits(model, wave, tokens, mode=mode, k=k, phi=phi).float()
        streamed = torch.stack(stream_session(model, wave, tokens, mode=mode, k=k, phi=phi).logits)
        assert streamed.shape == full.shape == (len(tokens) + 1, model.llm.config.vocab_size)
        scale = full.abs().max().item()
        tol = 0.04 * scale
        diff = (streamed - full).abs().max().item()
        print(f"bf16 {mode} k={k} phi={phi:g}: max |diff| {diff:.4g}, max |logit| {scale:.4g}")
        assert diff <= tol, (mode, k, phi, diff, scale)
        top2 = full.topk(2, dim=-1).values
        clear = (top2[:, 0] - top2[:, 1]) > tol
        assert clear.sum() >= len(tokens) // 2  # the check below covers most rows
        assert torch.equal(streamed.argmax(-1)[clear], full.argmax(-1)[clear]), (mode, k, phi)
        if mode == "group":  # the tolerance does catch a real mismatch: target positions off by one
            shifted = torch.stack(stream_session(model, wave, tokens, mode=mode, k=k, phi=phi + 1).logits)
            assert (shifted - full).abs().max().item() > 3 * tol
    # greedy decoding through one session and through batched streams
    s = StreamingSession(model, k=2, phi=0.0)
    s.push(wave)
    s.finish()
    assert s.state.ended and s.state.rows > 0
    eng = BatchedStreams(model, 2, k=2, phi=0.0)
    for i, w in enumerate((wave, wave[:12000])):
        eng.feed(i, w)
        eng.end(i)
    eng.drain()
    assert all(eng.done(i) and eng.sessions[i].state.rows > 0 for i in range(2))


# -- 3. a frozen encoder runs in eval mode ---------------------------------------------------------------

@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    """A tiny HuBERT with every training-only behaviour switched on hard: time masking, LayerDrop, dropout."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                       mask_time_prob=0.5, mask_time_length=2, mask_time_min_masks=1, layerdrop=0.5,
                       hidden_dropout=0.2, attention_dropout=0.2, activation_dropout=0.2, feat_proj_dropout=0.2)
    path = tmp_path_factory.mktemp("tiny-hubert-train")
    HubertModel(cfg).save_pretrained(path)
    return str(path)


def test_frozen_hf_encoder_stays_in_eval_mode_while_training(hubert_dir, codec):
    from asr_stream.config import EncoderConfig

    base = test_sized(320)
    enc_cfg = EncoderConfig(kind="hf", hf_name_or_path=hubert_dir, chunk_ms=320, hf_left_context_ms=320, freeze=True)
    torch.manual_seed(0)
    model = SpeechLLM(replace(base, encoder=enc_cfg), codec)
    assert not model.encoder.training  # from construction on (Lightning restores captured submodule modes)
    model.train()
    assert model.training and model.llm.training and model.projector.training  # the rest does train
    assert not model.encoder.training and not any(m.training for m in model.encoder.modules())
    wave = torch.from_numpy(noise_audio(1.6, seed=2))[None]
    torch.manual_seed(1)
    a = model.encoder(wave)
    b = model.encoder(wave)
    assert torch.equal(a, b)  # no time masking, LayerDrop or dropout
    model.eval()
    assert torch.equal(model.encoder(wave), a)  # what inference sees is what training saw
    # an unfrozen encoder does train (the same HuBERT: its training-mode forwards differ)
    free = SpeechLLM(replace(base, encoder=replace(enc_cfg, freeze=False)), codec).train()
    assert free.encoder.training and not torch.equal(free.encoder(wave), free.encoder(wave))


def test_frozen_own_encoder_stays_in_eval_mode_while_training(codec):
    base = test_sized(160)
    model = SpeechLLM(replace(base, encoder=replace(base.encoder, dropout=0.3, spec_augment=True, freeze=True)), codec)
    model.train()
    assert not any(m.training for m in model.encoder.modules()) and model.llm.training
    wave = torch.from_numpy(noise_audio(1.0, seed=3))[None]
    wave = torch.nn.functional.pad(wave, (0, 7 * model.chunk_samples - wave.shape[1]))
    assert torch.equal(model.encoder(wave), model.encoder(wave))


# -- 4. longrope Phi-3 variants (Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini) ------------------------------

LONGROPE = dict(max_position_embeddings=64, original_max_position_embeddings=16,
                rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 16,
                                 "short_factor": [1.0, 1.0, 1.0, 1.0], "long_factor": [1.0, 3.0, 9.0, 27.0]})


@pytest.fixture(scope="module")
def longrope_dir(tmp_path_factory, codec):
    return save_tiny_phi3(tmp_path_factory.mktemp("tiny-phi3-longrope"), codec, initializer_range=0.3, **LONGROPE)


@pytest.mark.parametrize("mode", ["group", "interleaved"])
def test_longrope_streaming_equals_training_past_the_original_length(longrope_dir, codec, mode):
    """transformers picks short or long factors per call from the largest position in that call; the
    decoder pins one set per model, so the utterance's training forward (positions past 16) and its
    streaming calls (most of them below 16) rotate every position alike."""
    model = pretrained_model(longrope_dir)
    assert model.llm.config.rope_parameters["rope_type"] == "longrope"
    wave = noise_audio(1.9, seed=4)  # 12 chunks x 2 embeddings: source positions up to 23 > 16
    tokens = codec.encode(SENTENCES[0])
    full = forward_logits(model, wave, tokens, mode=mode, k=2, phi=0.0)
    streamed = torch.stack(stream_session(model, wave, tokens, mode=mode, k=2, phi=0.0).logits)
    assert (streamed - full).abs().max().item() <= 1e-4


def test_longrope_pins_the_short_factors(longrope_dir):
    """The rule (decoder.pin_rope_factors): the checkpoint's short factors at every position, i.e. what
    transformers itself runs for any call below original_max_position_embeddings."""
    from transformers import Phi3ForCausalLM

    from asr_stream import decoder as dec

    model = pretrained_model(longrope_dir)
    raw = Phi3ForCausalLM.from_pretrained(longrope_dir, attn_implementation="sdpa").eval()
    x = torch.randn(1, 30, 32)
    mask = torch.zeros(1, 30, 30).masked_fill(torch.ones(30, 30).triu(1).bool(), torch.finfo(torch.float32).min)
    pos = torch.arange(30.0)[None]
    with torch.no_grad():
        ours = dec.run(model.llm, x, mask, pos)
        short = dec.run(raw, x[:, :12], mask[:, :12, :12], pos[:, :12])  # below 16: transformers uses short
        long = dec.run(raw, x, mask, pos)  # past 16: transformers switches the whole call to long
    assert (ours[:, :12] - short).abs().max().item() <= 1e-5
    assert (ours - long).abs().max().item() > 1e-2


# -- 5. byte-level BPE (GPT-2 style "Ġ", as Phi-4-mini) -------------------------------------------------

@pytest.fixture(scope="module")
def byte_level_codec():
    """A byte-level BPE trained here: ByteLevel pre-tokenizer without a prefix space, so the first word has no "Ġ"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 4, trainer)
    return TextCodec(PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"))


def first_token_rows(codec: TextCodec, tokens) -> list[int]:
    """Index of each word's first token, read from the pieces themselves (not from TextCodec)."""
    pieces = codec.tok.convert_ids_to_tokens(tokens)
    return [i for i, p in enumerate(pieces) if i == 0 or p.startswith("Ġ")]


@pytest.mark.parametrize("k", [1, 3])
def test_byte_level_bpe_first_token_of_word_j_sees_k_plus_j_chunks(byte_level_codec, k):
    codec = byte_level_codec
    assert codec.style == "prefix"
    text = SENTENCES[0]
    tokens = codec.encode(text)
    pieces = codec.tok.convert_ids_to_tokens(tokens)
    assert not pieces[0].startswith("Ġ") and len(tokens) > len(text.split())  # the premise: no marker on word 0
    starts = first_token_rows(codec, tokens)
    assert len(starts) == len(text.split())
    torch.manual_seed(0)
    model = SpeechLLM(test_sized(160), codec).eval()
    cs, N = model.chunk_samples, 16  # more chunks than k + words: no row is capped at N
    E = model.embeds_per_chunk

    # the training layout: row i (predicting token i) of word j's first token sees k + j chunks
    els = training_layout("group", 0, N, E, units_done(codec.boundaries(tokens)), k, 0.0)
    vis = {int(i): int(c) for i, c in zip(els.index[els.kind == TARGET], els.chunk[els.kind == TARGET])}
    assert [vis[i] for i in starts] == [k + j for j in range(len(starts))]

    # streaming: the same visibility in the session's cache table, and the same logits as training
    wave = noise_audio(N * cs / 16000, seed=5)
    s = stream_session(model, wave, tokens, mode="group", k=k)
    tgt = s.state.elements.kind == TARGET
    svis = {int(i): int(c) for i, c in zip(s.state.elements.index[tgt], s.state.elements.chunk[tgt])}
    assert [svis[i] for i in starts] == [k + j for j in range(len(starts))]
    base = torch.stack(s.logits)
    assert (base - forward_logits(model, wave, tokens, mode="group", k=k)).abs().max().item() <= 1e-4

    # and what the rows really attend to: the first token of word j depends on chunk k + j - 1, not later ones
    rng = np.random.default_rng(0)
    for j in range(3):
        row, last = starts[j], k + j - 1
        later = wave.copy()
        later[(last + 1) * cs :] = 0.2 * rng.standard_normal(len(wave) - (last + 1) * cs).astype(np.float32)
        assert torch.equal(torch.stack(stream_session(model, later, tokens, mode="group", k=k).logits)[row], base[row])
        seen = wave.copy()
        seen[last * cs : (last + 1) * cs] *= -3.0
        assert (torch.stack(stream_session(model, seen, tokens, mode="group", k=k).logits)[row] - base[row]).abs().max() > 1e-4


# -- 2. inference follows training ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def phi256_dir(tmp_path_factory, codec):
    """A model trained (as its config.json records) at φ = 256 with k in {1, 2}."""
    torch.manual_seed(0)
    model = SpeechLLM(replace(test_sized(160), phi=256.0, train_k=(1, 2)), codec)
    return model.save(tmp_path_factory.mktemp("phi256"))


def test_default_k_rule():
    from asr_stream.streaming.defaults import default_k

    assert default_k((1, 2, 3, 5)) == 3
    assert default_k((1, 2)) == 2
    assert default_k((2, 4)) == 4  # a tie goes to the larger k
    assert default_k((5, 9)) == 5


def test_streaming_defaults_to_the_training_phi_mode_and_k(phi256_dir, codec):
    import warnings

    from asr_stream.config import StreamConfig, TrainingMismatchWarning

    model = SpeechLLM.load(phi256_dir)
    assert (model.cfg.phi, model.cfg.train_k, model.cfg.train_mode) == (256.0, (1, 2), "group")
    wave = noise_audio(1.9, seed=6)
    tokens = codec.encode(SENTENCES[3])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingMismatchWarning)  # defaults and matching values never warn
        default = stream_session(model, wave, tokens)
        explicit = stream_session(model, wave, tokens, mode="group", k=2, phi=256.0)
        assert (default.cfg.mode, default.cfg.k, default.cfg.phi) == ("group", 2, 256.0)
        batched = BatchedStreams(model, 2).cfg
        assert (batched.mode, batched.k, batched.phi) == ("group", 2, 256.0)
        assert StreamingSession(model, StreamConfig(k=1)).cfg.phi == 256.0  # a StreamConfig's unset fields too
    assert torch.equal(torch.stack(default.logits), torch.stack(explicit.logits))
    with pytest.warns(TrainingMismatchWarning, match=r"phi=0 \(trained: 256\)"):
        at_zero = stream_session(model, wave, tokens, phi=0.0)
    assert (torch.stack(at_zero.logits) - torch.stack(default.logits)).abs().max() > 1e-3
    with pytest.warns(TrainingMismatchWarning, match=r"k=3 \(trained: 1 2\)"):
        StreamingSession(model, k=3)
    with pytest.warns(TrainingMismatchWarning, match=r"mode=interleaved \(trained: group\)"):
        StreamingSession(model, mode="interleaved")
    with pytest.warns(TrainingMismatchWarning, match="phi=0"):
        BatchedStreams(model, 2, StreamConfig(phi=0.0))


def test_cli_and_sweep_default_to_training_and_announce_the_rest(phi256_dir, tmp_path, capsys):
    import csv
    import json

    import soundfile as sf

    from asr_stream.cli import main
    from asr_stream.data import Utterance
    from asr_stream.evaluation.sweep import run_sweep
    from asr_stream.evaluation.runner import Setting

    wav = tmp_path / "a.wav"
    sf.write(wav, noise_audio(0.8, seed=1), 16000)
    main(["transcribe", str(wav), "--model", str(phi256_dir), "--json", str(tmp_path / "a.json")])
    settings = json.loads((tmp_path / "a.json").read_text())["settings"]
    assert (settings["mode"], settings["k"], settings["phi"], settings["as_trained"]) == ("group", 2, 256.0, True)
    assert "streaming differently" not in capsys.readouterr().err  # (the noise is quiet: that warning may come)
    main(["transcribe", str(wav), str(wav), "--model", str(phi256_dir), "--phi", "0", "--json", str(tmp_path / "b.json")])
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line and "quiet" not in line]
    assert err == ["asr-stream: warning: streaming differently from how the model was trained: phi=0 (trained: 256) "
                   "(expect a higher error rate)"]  # one line, once for two files
    assert json.loads((tmp_path / "b.json").read_text())["settings"]["as_trained"] is False

    model = SpeechLLM.load(phi256_dir)
    utts = [Utterance("u0", wav, "A SMALL MODEL", 0.8)]
    with pytest.warns(Warning):  # the φ = 0 cell announces itself
        run_sweep(lambda mode: model, utts, [Setting("group", 2, 256.0), Setting("group", 2, 0.0)], tmp_path / "sw",
                  progress=False)
    rows = list(csv.DictReader((tmp_path / "sw" / "results.csv").open()))
    assert [(r["phi"], r["as_trained"], r["train_phi"], r["differences"]) for r in rows] == [
        ("256.0", "True", "256.0", ""), ("0.0", "False", "256.0", "phi=0 (trained: 256)")]
    md = (tmp_path / "sw" / "results.md").read_text()
    assert "| as trained |" in md and "| yes |" in md and "| no: phi=0 (trained: 256) |" in md


# -- 6. the HF encoder's left context: its cost, and why it is not cached --------------------------------

def test_hf_encoder_context_benchmark_runs_and_backs_the_no_cache_decision(tmp_path):
    """benchmarks/encoder/hf_encoder_context.py at tiny size: the figures README and design.md quote come from it."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "encoder" / "hf_encoder_context.py"
    spec = importlib.util.spec_from_file_location("hf_encoder_context", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--size", "tiny", "--seconds", "1.6", "--json", str(tmp_path / "r.json")])
    assert res["window_samples"] == 15360 + 5120 + 80 and res["frame_ratio"] == 4.0
    assert res["stream_context_ms_per_chunk"] > 0 and (tmp_path / "r.json").exists()
    assert 0.1 < res["large_conv_mac_share"] < 0.2  # HuBERT-large: the conv front end is ~14 % of a window
    # a chunk's hidden states change once the next chunk is in the window: not reusable as cached K/V
    assert res["context_hidden_rel_diff"] > 1e-2
    # a layer-norm front end without hf_normalize: conv features reusable except each chunk's last frame
    assert res["conv_features_rel_diff_all_but_last_frame"] <= 1e-5 < 1e-2 < res["conv_features_rel_diff_last_frame"]
