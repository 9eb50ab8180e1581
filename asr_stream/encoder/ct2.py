"""Read a CTranslate2 ``model.bin`` and map a Whisper model's variables onto transformers' Whisper names.

CTranslate2 stores a model as one binary file (format version 6, ``ctranslate2/specs/model_spec.py``), all
integers little-endian::

    u32 version | str spec name | u32 revision | u32 n
    n x [ str name | u8 ndim | u32 dim x ndim | u8 dtype | u32 nbytes | nbytes of raw data ]
    u32 m | m x [ str alias | str name ]              (aliases: e.g. the tied output projection)

where ``str`` is u16 length (including a final NUL) + UTF-8 bytes + NUL. The ``ctranslate2`` wheel runs such
models but does not hand out their weights, so this reader (numpy only) is what lets a CTranslate2 Whisper
folder (e.g. the faster-whisper conversions) become a transformers ``WhisperEncoder``. Anything that is not
such a file, or ends early, is refused with a one-line :class:`CT2FormatError`.

Whisper in CTranslate2 (``WhisperSpec``): self-attention ``linear_0`` is q, k and v fused along the output
dimension (k has no bias in Whisper; the stored k bias is zero), ``linear_1`` the output projection;
cross-attention has ``linear_0`` (q), ``linear_1`` (k and v fused) and ``linear_2`` (output). Attention scaling
is applied at run time in both libraries, so the weights map one to one.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

SUPPORTED_VERSION = 6
# CTranslate2's DataType enum (include/ctranslate2/types.h) for the types a converted model stores
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_MAX_NDIM = 8


class CT2FormatError(ValueError):
    """A file that is not a (complete) CTranslate2 model of the expected kind."""


class _Reader:
    def __init__(self, data: memoryview, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise CT2FormatError(f"{self.where}: truncated ({len(self.data)} bytes) while reading {what} at byte {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.u("H", what)
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.where}: malformed string for {what} at byte {self.pos - n}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise CT2FormatError(f"{self.where}: {what} at byte {self.pos - n} is not UTF-8") from None


def parse_ct2(data: bytes | memoryview, where: str = "model.bin") -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and the variables (name -> array, aliases resolved) of a CTranslate2 model file's bytes."""
    r = _Reader(memoryview(data), where)
    if len(data) < 4:
        raise CT2FormatError(f"{where}: {len(data)} bytes: not a CTranslate2 model file")
    version = r.u("I", "the format version")
    if version != SUPPORTED_VERSION:
        raise CT2FormatError(f"{where}: not a CTranslate2 model file of format version {SUPPORTED_VERSION} "
                             f"(its first word is {version})")
    spec = r.string("the spec name")
    r.u("I", "the spec revision")
    count = r.u("I", "the variable count")
    out: dict[str, np.ndarray] = {}
    for i in range(count):
        name = r.string(f"variable {i}'s name")
        ndim = r.u("B", f"{name}'s rank")
        if ndim > _MAX_NDIM:
            raise CT2FormatError(f"{where}: variable {name} claims rank {ndim}: not a CTranslate2 model file")
        shape = tuple(r.u("I", f"{name}'s shape") for _ in range(ndim))
        dtype_id = r.u("B", f"{name}'s dtype")
        if dtype_id not in DTYPES:
            raise CT2FormatError(f"{where}: variable {name} has dtype id {dtype_id}, which this reader does not "
                                 f"know (known: {sorted(DTYPES)})")
        nbytes = r.u("I", f"{name}'s size")
        dtype = np.dtype(DTYPES[dtype_id])
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise CT2FormatError(f"{where}: variable {name}: {nbytes} bytes do not hold {shape} of {dtype}")
        out[name] = np.frombuffer(r.take(nbytes, f"{name}'s data"), dtype=dtype).reshape(shape)
    n_alias = r.u("I", "the alias count")
    for _ in range(n_alias):
        alias, target = r.string("an alias"), r.string("an alias target")
        if target not in out:
            raise CT2FormatError(f"{where}: alias {alias} names an unknown variable {target}")
        out[alias] = out[target]
    if r.pos != len(data):
        raise CT2FormatError(f"{where}: {len(data) - r.pos} bytes after the last alias: not a CTranslate2 model file")
    return spec, out


def read_ct2(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """:func:`parse_ct2` of a file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CT2FormatError(f"{path}: cannot read ({e.strerror or e})") from None
    return parse_ct2(data, str(path))


def _split_fused(w: np.ndarray, parts: int, name: str) -> list[np.ndarray]:
    if w.shape[0] % parts:
        raise CT2FormatError(f"{name}: {w.shape[0]} rows do not split into {parts} equal parts")
    return np.split(w, parts, axis=0)


def whisper_state_dicts(spec: str, v: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A ``WhisperSpec``'s variables -> (WhisperConfig keyword arguments, encoder state, decoder state).

    The encoder state has ``WhisperEncoder``'s names (``conv1.weight``, ``layers.0.self_attn.q_proj.weight``,
    ...), the decoder state ``WhisperDecoder``'s. Sizes come from the shapes; a missing or misshapen variable
    is a :class:`CT2FormatError` naming it.
    """
    if spec != "WhisperSpec":
        raise CT2FormatError(f"a CTranslate2 {spec}, not a Whisper model (WhisperSpec)")

    def get(name: str) -> np.ndarray:
        if name not in v:
            raise CT2FormatError(f"not a complete Whisper model: no variable {name}")
        return v[name]

    def layers(prefix: str) -> int:
        n = 0
        while f"{prefix}/layer_{n}/ffn/linear_0/weight" in v:
            n += 1
        if n == 0:
            raise CT2FormatError(f"not a complete Whisper model: no {prefix} layers")
        return n

    d_model = get("encoder/conv2/weight").shape[0]
    n_enc, n_dec = layers("encoder"), layers("decoder")

    def norm(dst: dict, name: str, src: str) -> None:
        dst[f"{name}.weight"], dst[f"{name}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    def linear(dst: dict, name: str, src: str) -> None:
        dst[f"{name}.weight"], dst[f"{name}.bias"] = get(f"{src}/weight"), get(f"{src}/bias")

    def ffn(dst: dict, i: int, src: str) -> None:
        norm(dst, f"layers.{i}.final_layer_norm", f"{src}/ffn/layer_norm")
        linear(dst, f"layers.{i}.fc1", f"{src}/ffn/linear_0")
        linear(dst, f"layers.{i}.fc2", f"{src}/ffn/linear_1")

    def self_attn(dst: dict, i: int, src: str, name: str = "self_attn") -> None:
        q, k, val = _split_fused(get(f"{src}/linear_0/weight"), 3, f"{src}/linear_0/weight")
        qb, kb, vb = _split_fused(get(f"{src}/linear_0/bias"), 3, f"{src}/linear_0/bias")
        if np.any(kb):
            raise CT2FormatError(f"{src}/linear_0/bias: the key bias is not zero (Whisper's keys have no bias)")
        p = f"layers.{i}.{name}"
        dst.update({f"{p}.q_proj.weight": q, f"{p}.q_proj.bias": qb, f"{p}.k_proj.weight": k,
                    f"{p}.v_proj.weight": val, f"{p}.v_proj.bias": vb})
        linear(dst, f"{p}.out_proj", f"{src}/linear_1")
        norm(dst, f"layers.{i}.{name}_layer_norm", f"{src}/layer_norm")

    enc: dict[str, np.ndarray] = {}
    for c in ("conv1", "conv2"):
        linear(enc, c, f"encoder/{c}")
    enc["embed_positions.weight"] = get("encoder/position_encodings/encodings")
    for i in range(n_enc):
        self_attn(enc, i, f"encoder/layer_{i}/self_attention")
        ffn(enc, i, f"encoder/layer_{i}")
    norm(enc, "layer_norm", "encoder/layer_norm")

    dec: dict[str, np.ndarray] = {"embed_tokens.weight": get("decoder/embeddings/weight"),
                                  "embed_positions.weight": get("decoder/position_encodings/encodings")}
    for i in range(n_dec):
        src = f"decoder/layer_{i}"
        self_attn(dec, i, f"{src}/self_attention")
        a = f"{src}/attention"
        kw, vw = _split_fused(get(f"{a}/linear_1/weight"), 2, f"{a}/linear_1/weight")
        kb, vb = _split_fused(get(f"{a}/linear_1/bias"), 2, f"{a}/linear_1/bias")
        if np.any(kb):
            raise CT2FormatError(f"{a}/linear_1/bias: the key bias is not zero (Whisper's keys have no bias)")
        p = f"layers.{i}.encoder_attn"
        dec.update({f"{p}.q_proj.weight": get(f"{a}/linear_0/weight"), f"{p}.q_proj.bias": get(f"{a}/linear_0/bias"),
                    f"{p}.k_proj.weight": kw, f"{p}.v_proj.weight": vw, f"{p}.v_proj.bias": vb})
        linear(dec, f"{p}.out_proj", f"{a}/linear_2")
        norm(dec, f"layers.{i}.encoder_attn_layer_norm", f"{a}/layer_norm")
        ffn(dec, i, src)
    norm(dec, "layer_norm", "decoder/layer_norm")

    heads = int(get("encoder/num_heads"))
    config = dict(
        vocab_size=dec["embed_tokens.weight"].shape[0], num_mel_bins=enc["conv1.weight"].shape[1], d_model=d_model,
        encoder_layers=n_enc, decoder_layers=n_dec, encoder_attention_heads=heads,
        decoder_attention_heads=int(get("decoder/num_heads")), encoder_ffn_dim=enc["layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=dec["layers.0.fc1.weight"].shape[0],
        max_source_positions=enc["embed_positions.weight"].shape[0],
        max_target_positions=dec["embed_positions.weight"].shape[0])
    if d_model % heads:
        raise CT2FormatError(f"encoder/num_heads: {heads} heads do not divide width {d_model}")
    return config, enc, dec
