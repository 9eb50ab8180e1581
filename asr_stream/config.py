"""Frozen option dataclasses for every stage. Standard library only.

Each field carries a one-line docstring (the string literal under it); units are in the names.
A model directory stores :class:`ModelConfig` as JSON; :class:`StreamConfig` is chosen at run time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

# The names of modes and policies, written once: the command line's choices (its options are typed with these
# Literals), the configs' checks and the tuples below all come from here. What a mode is: asr_stream.groups (its
# layout and masks); what a policy is and the parameters it takes: asr_stream.streaming.policy (its registry).

Mode = Literal["group", "interleaved", "batch"]
"""A decoding mode: where target rows sit among the chunks (:mod:`asr_stream.groups`)."""
MODES: tuple[Mode, ...] = typing.get_args(Mode)
Reencode = Literal["none", "position", "kv"]
"""Batch mode's re-encoding of the target after each chunk (``none``: plain batch)."""
REENCODES: tuple[Reencode, ...] = typing.get_args(Reencode)
EvalMode = Literal["group", "interleaved", "batch", "batch-position", "batch-kv"]
"""An evaluation setting's mode: a :data:`Mode`, or ``batch-<reencode>`` (:func:`split_eval_mode`)."""
EVAL_MODES: tuple[EvalMode, ...] = typing.get_args(EvalMode)
PolicyName = Literal["waitk", "ctc", "confidence"]
"""A read/write policy (:data:`asr_stream.streaming.policy.REGISTRY`)."""
POLICIES: tuple[PolicyName, ...] = typing.get_args(PolicyName)
EarlyEos = Literal["wait", "stop"]
TextFormat = Literal["plain", "formatted"]
"""What a model writes (:attr:`ModelConfig.text_format`): upper case without punctuation, or case and punctuation."""
TEXT_FORMATS: tuple[TextFormat, ...] = typing.get_args(TextFormat)


def split_eval_mode(name: str) -> tuple[Mode, Reencode]:
    """``"batch-kv"`` -> ("batch", "kv"); a plain mode -> (mode, "none"). ValueError on a name not in EVAL_MODES."""
    if name not in EVAL_MODES:
        raise ValueError(f"unknown mode {name!r} (expected one of {EVAL_MODES})")
    mode, _, reencode = name.partition("-")
    return mode, reencode or "none"  # type: ignore[return-value]


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel filterbank front end (used by the own encoder)."""

    n_mels: int = 80
    """Number of mel bands."""
    win_ms: float = 25.0
    """Analysis window length in ms."""
    hop_ms: float = 10.0
    """Hop between frames in ms (frame rate = 1000 / hop_ms per second)."""
    n_fft: int = 512
    """FFT size in samples (>= window length)."""
    f_min: float = 20.0
    """Lowest mel filter edge in Hz."""
    f_max: float = 7600.0
    """Highest mel filter edge in Hz."""


@dataclass(frozen=True)
class EncoderConfig:
    """Chunked audio encoder. ``kind='chunk_transformer'`` is our own; ``kind='hf'`` and ``kind='whisper'`` wrap
    pretrained ones."""

    kind: Literal["chunk_transformer", "hf", "whisper"] = "chunk_transformer"
    """Own chunk-causal transformer, a Hugging Face wav2vec2-family encoder run chunk-wise, or Whisper's encoder
    run chunk-wise (asr_stream/encoder/whisper.py)."""
    chunk_ms: int = 320
    """Chunk length in ms: the unit of reading. Outputs for a chunk never change once computed."""
    d_model: int = 256
    """Own encoder width."""
    n_layers: int = 6
    """Own encoder transformer layers."""
    conv_channels: int = 0
    """Own encoder: channels of the x4 conv subsampling (0 = d_model); the convs dominate CPU training cost."""
    n_heads: int = 4
    """Own encoder attention heads."""
    ff_mult: int = 4
    """Own encoder feed-forward width = ff_mult * d_model."""
    dropout: float = 0.1
    """Own encoder dropout (training only)."""
    left_chunks: int = -1
    """Own encoder: how many past chunks each chunk may attend to (-1 = all; bounds memory on long streams)."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """Log-mel front end of the own encoder."""
    hf_name_or_path: str = ""
    """kind='hf': hub id or local directory of a wav2vec2/HuBERT/WavLM model; kind='whisper': of a Whisper model
    (openai/whisper-small, ..., or a directory that tools/model/convert_whisper_ct2.py wrote)."""
    hf_left_context_ms: int = 0
    """kind='hf' / 'whisper': previous audio (ms) prepended to each chunk as context; outputs for it are discarded
    (whisper: whole 20 ms frames, rounded down)."""
    whisper_positions: Literal["window", "stream"] = "window"
    """kind='whisper': the sinusoidal position of a window's frame. 'window': its place in the short window (0, 1,
    ...; any stream length). 'stream': its place in the stream, as in Whisper's own 30 s window (keeps much more of
    Whisper's representations, benchmarks/RESULTS.md); past Whisper's last position (30 s) the window's positions
    slide so that its last frame takes the last one. Training and streaming use the same rule."""
    whisper_lookahead_chunks: int = 0
    """kind='whisper': chunks of right context (look-ahead). With L, the encoder step that receives chunk c emits
    chunk c - L's frames, computed on a window that reaches to chunk c's end; its output lags the audio by L chunks
    (the first L output chunks are zeros), and an utterance takes L more chunks (zeros: ``SpeechLLM.num_chunks``,
    the session's finish()). 0: a chunk's frames are emitted with the chunk."""
    whisper_trailing_silence_ms: int = 0
    """kind='whisper': digital silence (ms, a multiple of 20) appended to every window after its last real frame,
    convolved from floor-value mel frames (so the last real frame sees silence to its right, not zero padding)."""
    hf_normalize: bool = True
    """kind='hf': zero-mean unit-variance normalise each window, as Wav2Vec2FeatureExtractor does."""
    spec_augment: bool = False
    """Own encoder: SpecAugment (frequency and time masks) on log-mel while training."""
    freeze: bool = False
    """Do not train the encoder."""
    unfrozen_top_layers: int = 0
    """kind='whisper' with ``freeze``: the top N transformer layers and the final layer norm train all the same (the
    convolutions, positions and lower layers stay frozen), so the encoder can adapt to the short windows it is
    streamed on. Its outputs then change every step: no feature cache."""

    @property
    def trains(self) -> bool:
        """Whether any of the encoder's weights train (its outputs then change every step: nothing to cache)."""
        return not self.freeze or self.unfrozen_top_layers > 0


@dataclass(frozen=True)
class ProjectorConfig:
    """Frame stacking + MLP from encoder width to LLM width."""

    stack: int = 2
    """Consecutive encoder frames concatenated into one LLM embedding (must divide frames per chunk)."""
    hidden: int = 1024
    """MLP hidden width."""
    ctc_embed: bool = False
    """Add the CTC head's non-blank posteriors (summed over the stacked frames) times the LLM's token
    embedding matrix to each source embedding, so the decoder reads what the encoder heard in its own
    token space (needs ctc_weight > 0). Per chunk, like the rest of the projector."""


@dataclass(frozen=True)
class DecoderConfig:
    """Phi-3 decoder: pretrained (hub id / local dir) or built from ``tiny`` kwargs of ``Phi3Config``."""

    name_or_path: str = ""
    """Hub id or local directory of a Phi-3 checkpoint (and its tokenizer). Empty: build from ``tiny``."""
    tiny: dict[str, Any] = field(default_factory=dict)
    """Phi3Config keyword arguments for a model built from scratch (vocab size comes from the tokenizer)."""
    lora_r: int = 0
    """LoRA rank on the attention and MLP projections (0 = no LoRA)."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    freeze: bool = False
    """Freeze the base LLM weights (LoRA weights, if any, still train)."""
    dtype: str = "float32"
    """Weights dtype when loading a pretrained model: float32, bfloat16 or float16."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a SpeechLLM; saved as config.json in a model directory."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Audio encoder."""
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    """Encoder-to-LLM projector."""
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    """LLM decoder."""
    prompt: str = ""
    """Optional text prompt placed before the audio in the source group (positions 0..P-1)."""
    ctc_weight: float = 0.0
    """Weight of an auxiliary CTC loss on the encoder output (0 = off); helps alignment emerge."""
    train_mode: Mode = "group"
    """Training layout this model was trained with (group / interleaved / batch)."""
    train_k: tuple[int, ...] = (3,)
    """Wait-k values drawn from per batch in training (several = one model for any k)."""
    phi: float = 0.0
    """Target-group position offset used in training (group mode)."""
    context_max_tokens: int = 0
    """The longest context list (in tokens, separators included) the model was trained to read as a prefix of its
    target group (:mod:`asr_stream.context`); 0: trained without context lists, and a context given to it is
    refused. Longer lists are refused too."""
    text_format: TextFormat = "plain"
    """What the model writes. plain: upper case without punctuation (LibriSpeech style); formatted: the text as
    written, with case and punctuation (trained on :attr:`Utterance.formatted`; its tokenizer must know cased
    text: ``prepare(..., text_format="formatted")``). Inference shows it as written unless asked for plain text
    (``--plain``: :func:`asr_stream.transcript.plain_text`); WER is scored after normalisation either way."""


class TrainingMismatchWarning(UserWarning):
    """A stream setting chosen explicitly that differs from how the model was trained (φ, mode, k)."""


@dataclass(frozen=True)
class StreamConfig:
    """How a streaming session reads and writes.

    ``mode``, ``k`` and ``phi`` left at None take the model's training values
    (:func:`asr_stream.streaming.defaults.stream_config_for`); values given explicitly are used as they are,
    with a :class:`TrainingMismatchWarning` where they differ from the training."""

    mode: Mode | None = None
    """group: group positions + wait-k mask; interleaved: arrival order, causal; batch: batch positions.
    None: the model's ``train_mode``."""
    k: int | None = None
    """Wait-k: target word j is written after reading min(k + j, N) chunks. None: 3 if the model was trained
    with k = 3, else the training k closest to 3 (the larger on a tie)."""
    phi: float | None = None
    """Target-group start position (group mode); any float >= 0. None: the model's training φ."""
    reencode: Reencode = "none"
    """Batch mode only: re-encode nothing, target positions, or the whole KV cache at each new chunk."""
    max_tokens_per_s: float = 12.0
    """Length guard: at most this many tokens per second of audio read (+ max_tokens_extra)."""
    max_tokens_extra: int = 8
    """Length guard slack in tokens."""
    early_eos: EarlyEos = "wait"
    """An EOS chosen before the end of the audio. wait: not written; its row is hidden and asked again with
    k one chunk larger for the rest of the utterance (a transcript cannot end before its audio does).
    stop: written, and the stream ends there. Teacher forcing always writes what it forces."""
    policy: PolicyName = "waitk"
    """Read/write policy (:mod:`asr_stream.streaming.policy`): waitk (fixed: word j after k + j chunks), ctc (word j
    once the CTC head has heard its end; needs a CTC head) or confidence (a row is kept when the decoder's top
    token probability reaches a threshold, else asked again after the next chunk). Adaptive policies write word
    j at the latest after k_max + j chunks (k_max defaults to ``k``) and never before the first chunk."""
    policy_args: dict[str, float] = field(default_factory=dict)
    """Parameters of the adaptive policies: ctc: threshold (boundary mass, default 0.5), margin (chunks, default 0),
    k_max, k_min; confidence: threshold (probability, default 0.9), k_max, k_min. k_min unset: the smallest k the
    model was trained with (filled in when the settings are resolved for a model)."""
    context: tuple[str, ...] = ()
    """Context list (prompted hotwords): words and phrases the decoder reads before the transcript, e.g.
    ("Zanzibar", "Okonkwo") (:mod:`asr_stream.context`). Empty: none. Needs a model trained with context lists."""
    plain: bool = False
    """Write plain text whatever the model writes: a formatted model's words (``ModelConfig.text_format``) upper case
    without punctuation, as a plain model writes them (:func:`asr_stream.transcript.plain_text`; a word that is only
    punctuation is not written). A plain model's words are unchanged. Word times, the schedule and everything the
    model computes are the same either way."""


def _type_ok(value: Any, hint: Any) -> bool:
    """Does a JSON value fit a field's annotation? (the annotations used in this module only)"""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return value in args
    if origin is typing.Union:
        return any(_type_ok(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    return True


def _build(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a nested frozen dataclass from plain JSON data; unknown keys and values of the wrong type (or a
    negative size) are a one-line ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config field(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if not _type_ok(value, hints[name]):
            raise ValueError(f"{cls.__name__}.{name}: {value!r} is not a valid {getattr(hints[name], '__name__', hints[name])}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0 and name not in _MAY_BE_NEGATIVE:
            raise ValueError(f"{cls.__name__}.{name}: must not be negative, got {value!r}")
        if isinstance(value, dict) and name == "tiny":
            bad = {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0}
            if bad:
                raise ValueError(f"{cls.__name__}.tiny: negative value(s) {bad}")
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else known[name].default  # type: ignore[misc]
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = _build(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


_MAY_BE_NEGATIVE = {"left_chunks"}  # -1 = all past chunks


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    return _build(ModelConfig, data)


def model_config_to_json(cfg: ModelConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)
