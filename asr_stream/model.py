"""SpeechLLM = chunked encoder + projector + Phi-3 decoder. Training forward -> loss; save/load.

No Lightning here: the training recipe wraps this module. A model directory holds
``config.json`` (:class:`~asr_stream.config.ModelConfig`), ``model.safetensors`` (every weight the model was
trained with, a pretrained encoder's included) and the tokenizer files; a model with a Whisper encoder also
``encoder/``: the Whisper ``config.json``, ``preprocessor_config.json`` and the licence files (NOTICE, LICENSE) of
the folder it was first loaded from, so that it loads without that folder (see :meth:`SpeechLLM.load`).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import decoder as dec
from .audio.io import SAMPLES_PER_MS
from .config import ModelConfig, model_config_from_dict, model_config_to_json
from .encoder import build_encoder
from .encoder.whisper import ARCHITECTURE_FILES, NOTICE_PATTERNS
from .groups import CONTEXT, PROMPT, AUDIO, TARGET, additive_mask, allowed, pad_elements, training_layout, units_done
from .projector import Projector

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ENCODER_DIR = "encoder"
"""A model directory's sub-folder with its Whisper encoder's architecture and licence files (no weights)."""
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A model directory that cannot be loaded (missing, not safetensors, or not matching its config)."""


@dataclass
class Batch:
    """Padded audio and tokenised transcripts."""

    wave: torch.Tensor  # (B, T) float32 at 16 kHz, zero-padded
    wave_lens: torch.Tensor  # (B,) valid samples
    targets: list[list[int]]  # transcript token ids, no BOS/EOS
    enc: torch.Tensor | None = None
    """The encoder's outputs for ``wave`` when already known (B, >= N*F, D), e.g. a frozen encoder's cached ones
    (:mod:`asr_stream.training.features`): the forward then reads only ``wave_lens`` of the audio."""
    context: list[list[int]] | None = None
    """Per utterance, the token ids of its context list (:func:`asr_stream.context.context_ids`; [] or None: no
    context): the prefix of the target group that the target rows see and the source never does."""


@dataclass
class ForwardOut:
    loss: torch.Tensor
    ce: torch.Tensor
    ctc: torch.Tensor | None
    target_logits: list[torch.Tensor]  # per utterance (T_b + 1, V): rows BOS, y_0..y_{T-1}
    n_tokens: int


class SpeechLLM(nn.Module):
    def __init__(self, cfg: ModelConfig, codec: dec.TextCodec | None = None, encoder_dir: str | Path | None = None) -> None:
        """``encoder_dir``: a saved model's ``encoder/`` folder to build the Whisper encoder from (untrained weights,
        for :meth:`load`) instead of ``cfg.encoder.hf_name_or_path``."""
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder, encoder_dir)
        self.llm, self.codec = dec.build_decoder(cfg.decoder, codec)
        width = dec.base_model(self.llm).config.hidden_size
        self.projector = Projector(cfg.projector, self.encoder.dim, width)
        if self.encoder.frames_per_chunk % cfg.projector.stack:
            raise ValueError(f"{self.encoder.frames_per_chunk} encoder frames per chunk not divisible by stack={cfg.projector.stack}")
        self.ctc_head = nn.Linear(self.encoder.dim, len(self.codec)) if cfg.ctc_weight > 0 else None
        if cfg.projector.ctc_embed and self.ctc_head is None:
            raise ValueError("projector.ctc_embed needs the CTC head: set ctc_weight > 0")
        if cfg.encoder.unfrozen_top_layers and not (cfg.encoder.freeze and cfg.encoder.kind == "whisper"):
            raise ValueError("encoder.unfrozen_top_layers applies to kind 'whisper' with freeze: true")
        self.freeze_encoder_as_configured()
        self.prompt_ids: list[int] = self.codec.encode(cfg.prompt) if cfg.prompt else []

    def freeze_encoder_as_configured(self) -> None:
        """``encoder.freeze``: no encoder weight trains and the encoder stays in eval mode (from the start: Lightning
        captures and restores submodule modes, see :meth:`train`), except the top ``encoder.unfrozen_top_layers``."""
        if self.cfg.encoder.freeze:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
            if self.cfg.encoder.unfrozen_top_layers:
                self.encoder.unfreeze_top(self.cfg.encoder.unfrozen_top_layers)

    def train(self, mode: bool = True) -> "SpeechLLM":
        """Like ``nn.Module.train``, except that a frozen encoder (``encoder.freeze``) always stays in eval mode.

        ``requires_grad_(False)`` alone would leave a frozen encoder's training-only behaviour on while the
        rest trains (HuBERT/wav2vec2: time masking, LayerDrop, dropout; ours: dropout, SpecAugment), so the
        decoder would learn from encoder outputs it never sees at inference."""
        super().train(mode)
        if self.cfg.encoder.freeze:
            self.encoder.eval()
        return self

    # -- geometry -------------------------------------------------------------------------------
    @property
    def chunk_samples(self) -> int:
        return self.encoder.chunk_samples

    @property
    def chunk_ms(self) -> float:
        return self.encoder.chunk_samples / SAMPLES_PER_MS

    @property
    def embeds_per_chunk(self) -> int:
        return self.encoder.frames_per_chunk // self.cfg.projector.stack

    def set_chunk_ms(self, chunk_ms: int) -> None:
        self.encoder.set_chunk_ms(chunk_ms)
        if self.encoder.frames_per_chunk % self.cfg.projector.stack:
            raise ValueError(f"chunk_ms={chunk_ms} gives {self.encoder.frames_per_chunk} frames, not divisible by stack")

    def num_chunks(self, num_samples: int) -> int:
        """Chunks an utterance of this many samples occupies (the last one zero-padded; at least one), plus the
        encoder's look-ahead chunks (zeros, read after the audio so that its last chunk comes out of the encoder)."""
        return max(1, math.ceil(num_samples / self.chunk_samples)) + self.encoder.lookahead_chunks

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def embed_audio(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N * chunk_samples) -> (encoder frames (B, N*F, D), source embeddings (B, N*E, H))."""
        enc = self.encoder(wave)
        return enc, self.project(enc)

    @property
    def llm_dtype(self) -> torch.dtype:
        """The dtype of the decoder's weights (bfloat16 for a Phi-3 loaded with ``dtype: bfloat16``)."""
        return dec.embed_tokens(self.llm).weight.dtype

    def project(self, enc: torch.Tensor) -> torch.Tensor:
        """Encoder frames (B, n*F, D) -> source embeddings (B, n*E, H); chunk-local, so streaming-safe.

        The one place where audio enters the decoder: the result is in the decoder's dtype, whatever the
        encoder and projector run in (a bf16 Phi-3 behind a float32 encoder and projector works outside
        autocast too: streaming, eval, transcribe)."""
        src = self.projector(enc)
        if self.cfg.projector.ctc_embed:
            post = self.ctc_head(enc).softmax(-1)  # (B, n*F, V)
            post = post * (torch.arange(post.shape[-1], device=post.device) != self.codec.pad_id)  # drop blank
            B, L, V = post.shape
            post = post.view(B, L // self.cfg.projector.stack, self.cfg.projector.stack, V).sum(2)
            table = dec.embed_tokens(self.llm).weight
            src = src + (post.to(table.dtype) @ table).to(src.dtype)
        return src.to(self.llm_dtype)

    def boundary_onsets(self, enc: torch.Tensor, prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder frames (B, L, D) of whole chunks -> (expected boundary-token onsets (B,), last frame's boundary
        posteriors (B, nB)): the evidence of the ``ctc`` read/write policy, about the number of word ends heard.

        Boundary tokens are the word-final "</w>" tokens (word starts for a prefix-style tokenizer). A CTC token
        often fills several frames, so the posterior mass itself over-counts (run 4's model: 9.3 for a 6-word
        sentence); an onset is the token on a frame and not on the frame before: sum over frames and boundary
        tokens of p_f(t) (1 - p_{f-1}(t)), which matched the word counts. ``prev``: the last frame of the
        previous chunk (None: the stream's start). Needs the CTC head."""
        if self.ctc_head is None:
            raise ValueError("this model has no CTC head (ctc_weight = 0): the ctc policy needs one")
        post = self.ctc_head(enc).float().softmax(-1)[..., self.codec._boundary.to(enc.device)]  # (B, L, nB)
        before = torch.cat([prev[:, None] if prev is not None else torch.zeros_like(post[:, :1]), post[:, :-1]], 1)
        return (post * (1 - before)).sum((-1, -2)), post[:, -1]

    def ctc_tokens(self, enc: torch.Tensor) -> torch.Tensor:
        """Encoder frames (B, L, D) -> the CTC head's most likely token per frame (B, L) (the pad id is CTC's blank):
        the segment drivers align it with the decoder's words to find where the last word ends (streaming.restart)."""
        if self.ctc_head is None:
            raise ValueError("this model has no CTC head (ctc_weight = 0)")
        return self.ctc_head(enc).argmax(-1)

    def embed_tokens(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        return dec.embed_tokens(self.llm)(t)

    # -- training forward -----------------------------------------------------------------------
    def forward(self, batch: Batch, mode: str | None = None, k: int | None = None, phi: float | None = None,
                vis: Sequence[Sequence[int]] | None = None) -> ForwardOut:
        """Loss on target tokens only (+ optional CTC on the encoder), for a mode's training layout.

        mode/k/phi default to the config's training settings (k: the first of train_k).
        ``batch`` mode with k=None trains offline (every target sees the whole utterance).
        ``vis``: per utterance, an explicit visibility per target row (len(targets[b]) + 1 chunks counts)
        instead of wait-k, e.g. the schedule an adaptive read/write policy produced.
        ``batch.context``: per utterance, context token ids (:mod:`asr_stream.context`); a model trained without
        context (``context_max_tokens`` = 0) refuses them, as does a list longer than ``context_max_tokens``.
        """
        mode = mode or self.cfg.train_mode
        phi = self.cfg.phi if phi is None else phi
        if k is None and mode != "batch":
            k = self.cfg.train_k[0]
        B = batch.wave_lens.shape[0]
        n_chunks = [self.num_chunks(int(n)) for n in batch.wave_lens]
        N = max(n_chunks)
        if batch.enc is not None:
            frames = N * self.encoder.frames_per_chunk
            if batch.enc.shape[1] < frames:
                raise ValueError(f"batch.enc has {batch.enc.shape[1]} frames, the audio lengths need {frames}")
            enc = batch.enc[:, :frames].to(self.device)
            src = self.project(enc)
        else:
            wave = batch.wave.to(self.device)
            total = N * self.chunk_samples
            wave = F.pad(wave, (0, total - wave.shape[1])) if wave.shape[1] < total else wave[:, :total]
            # zero everything past each utterance's end, so padded chunks equal the streaming tail padding
            keep = torch.arange(total, device=self.device)[None, :] < batch.wave_lens.to(self.device)[:, None]
            wave = wave * keep
            enc, src = self.embed_audio(wave)  # (B, N*F, D), (B, N*E, H)
        E, P = self.embeds_per_chunk, len(self.prompt_ids)
        bos, eos = self.codec.bos_id, self.codec.eos_id

        layouts, inputs, labels = [], [], []
        prompt_emb = self.embed_tokens(self.prompt_ids) if P else src.new_zeros(0, src.shape[-1])
        contexts = [list(c or []) for c in batch.context] if batch.context is not None else [[]] * B
        if any(contexts):
            from .context import check_context_length

            for c in contexts:
                check_context_length(self.cfg, len(c))
        for b in range(B):
            y = list(batch.targets[b])
            rows_in = [bos] + y  # target rows
            units = units_done(self.codec.boundaries(y))
            C = len(contexts[b])
            els = training_layout(mode, P, n_chunks[b], E, units, k, phi, vis=None if vis is None else vis[b], C=C)
            # canonical order of embeddings: prompt, context, audio, target rows -> gather by element
            ctx_emb = self.embed_tokens(contexts[b]) if C else src.new_zeros(0, src.shape[-1])
            canon = torch.cat([prompt_emb, ctx_emb, src[b, : n_chunks[b] * E], self.embed_tokens(rows_in)])
            offset = torch.where(els.kind == PROMPT, 0, torch.where(els.kind == CONTEXT, P, torch.where(
                els.kind == AUDIO, P + C, P + C + n_chunks[b] * E)))
            inputs.append(canon[(offset + els.index).to(self.device)])
            lab = torch.full((len(els),), -100, dtype=torch.long)
            tgt = els.kind == TARGET
            lab[tgt] = torch.tensor(y + [eos])[els.index[tgt]]
            labels.append(lab)
            layouts.append(els)
        L = max(len(e) for e in layouts)
        x = torch.stack([F.pad(t, (0, 0, 0, L - t.shape[0])) for t in inputs])
        els_p = [pad_elements(e, L) for e in layouts]
        # under autocast (bf16-mixed training) attention runs in the autocast dtype: a float32 minimum would
        # round to -inf there, so the mask is built in that dtype and stays finite
        dev = self.device.type
        mdtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        mask = torch.stack([additive_mask(allowed(mode, e, e), mdtype) for e in els_p]).to(self.device)
        pos = torch.stack([e.position for e in els_p]).to(self.device)
        lab = torch.stack([F.pad(l, (0, L - l.shape[0]), value=-100) for l in labels]).to(self.device)
        logits = dec.run(self.llm, x, mask, pos)  # (B, L, V)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), lab.flatten(), ignore_index=-100)
        target_logits = []
        for b, e in enumerate(els_p):
            tgt = torch.nonzero(e.kind == TARGET).flatten()
            order = torch.argsort(e.index[tgt])
            target_logits.append(logits[b, tgt[order].to(self.device)])
        ctc = None
        loss = ce
        if self.ctc_head is not None:
            ctc = self.ctc_loss(enc, [n * self.encoder.frames_per_chunk for n in n_chunks], batch.targets)
            loss = ce + self.cfg.ctc_weight * ctc
        return ForwardOut(loss=loss, ce=ce, ctc=ctc, target_logits=target_logits, n_tokens=int((lab != -100).sum()))

    def ctc_loss(self, enc: torch.Tensor, frame_lens: list[int], targets: list[list[int]]) -> torch.Tensor:
        """CTC on encoder frames with the pad token as blank (never a transcript token). A cased vocabulary's CTC head
        learns the plain forms (:meth:`TextCodec.plain_targets`): case and marks are the decoder's to write, not
        the frames' to hear, and the head's posteriors feed the source embeddings (``projector.ctc_embed``)."""
        logp = self.ctc_head(enc).float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
        targets = [self.codec.plain_targets(y) for y in targets]  # a cased vocabulary: words, no case or marks
        flat = torch.tensor([t for y in targets for t in y], dtype=torch.long)
        return F.ctc_loss(logp, flat, torch.tensor(frame_lens), torch.tensor([len(y) for y in targets]),
                          blank=self.codec.pad_id, reduction="mean", zero_infinity=True)

    # -- save / load ----------------------------------------------------------------------------
    def _saved_state(self) -> dict[str, torch.Tensor]:
        """All weights, except a frozen pretrained base LLM (reloaded from its hub id / directory)."""
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        d = self.cfg.decoder
        if d.name_or_path and (d.freeze or d.lora_r > 0):
            trainable = {n for n, p in self.named_parameters() if p.requires_grad}
            state = {k: v for k, v in state.items() if not k.startswith("llm.") or k in trainable}
        return state

    def save(self, path: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write a model directory. ``dtype=torch.float16`` halves the file (weights load back into float32).

        A Whisper encoder's weights go into model.safetensors with the rest; its architecture and licence files into
        ``encoder/`` (replacing one written before; a folder of that name that holds anything else is refused).
        ``config.json`` keeps ``encoder.hf_name_or_path`` as trained: where the encoder came from."""
        from safetensors.torch import save_file

        path = Path(path)
        enc_dir = path / ENCODER_DIR
        save_arch = getattr(self.encoder, "save_architecture", None)
        if save_arch is not None and enc_dir.exists():
            foreign = sorted(p.name for p in enc_dir.iterdir() if p.name not in ARCHITECTURE_FILES
                             and not any(p.match(n) for n in NOTICE_PATTERNS)) if enc_dir.is_dir() else [enc_dir.name]
            if foreign:
                raise ValueError(f"{enc_dir}: holds {foreign[0]}, not only a saved encoder architecture: not written over")
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(model_config_to_json(self.cfg))
        meta = {"format_version": str(FORMAT_VERSION), "asr_stream": "SpeechLLM"}
        state = self._saved_state()
        # tied embeddings share storage: safetensors refuses shared tensors, so store copies
        cast = lambda v: v.to(dtype) if dtype is not None and v.is_floating_point() else v.clone()  # noqa: E731
        save_file({k: cast(v) for k, v in state.items()}, str(path / WEIGHTS_FILE), metadata=meta)
        self.codec.save(path)
        if save_arch is not None:
            if enc_dir.exists():
                shutil.rmtree(enc_dir)  # a licence file of another encoder must not stay behind
            save_arch(enc_dir)
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "SpeechLLM":
        """A model directory (what :meth:`save` wrote), weights checked strictly against its config.

        A Whisper encoder is built from the directory's ``encoder/`` folder (architecture only; its weights are in
        model.safetensors), so the folder it was trained from (``encoder.hf_name_or_path``, kept in the config as
        provenance) need not exist. A directory saved before ``encoder/`` existed has none: its encoder is loaded
        from ``hf_name_or_path`` as in training, and then overwritten by model.safetensors."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: not a model directory")
        cfg_file, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not cfg_file.exists():
            raise CheckpointError(f"{path}: no {CONFIG_FILE} (not an asr-stream model directory)")
        if not weights.exists():
            others = sorted(p.name for p in path.iterdir() if p.suffix in {".pt", ".pth", ".bin", ".ckpt"})
            hint = f"; found {', '.join(others)} — only safetensors weights are loaded (pickles can run code)" if others else ""
            raise CheckpointError(f"{path}: no {WEIGHTS_FILE}{hint}")
        try:
            cfg = model_config_from_dict(json.loads(cfg_file.read_text()))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{cfg_file}: invalid config ({e})") from None
        try:
            state = load_file(str(weights), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
        try:
            codec = dec.TextCodec.load(path)
        except Exception as e:  # noqa: BLE001 - any tokenizer failure means the directory is incomplete
            raise CheckpointError(f"{path}: cannot load the tokenizer ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        arch = path / ENCODER_DIR
        if cfg.encoder.kind == "whisper" and arch.is_dir():
            for name in ARCHITECTURE_FILES:
                if not (arch / name).is_file():
                    raise CheckpointError(f"{arch / name}: missing (the Whisper encoder's architecture; its weights are in {WEIGHTS_FILE})")
        else:
            arch = None
        try:
            model = cls(cfg, codec, encoder_dir=arch)
        except (ValueError, TypeError, RuntimeError) as e:  # a config the architecture refuses (sizes, heads, ...)
            if cfg.encoder.kind == "whisper" and arch is None and not Path(cfg.encoder.hf_name_or_path).is_dir():
                raise CheckpointError(f"{path / ENCODER_DIR / ARCHITECTURE_FILES[0]}: missing, and the Whisper encoder that "
                                      f"{CONFIG_FILE} names cannot be loaded ({str(e).splitlines()[0]})") from None
            raise CheckpointError(f"{cfg_file}: cannot build the model it describes ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
        if bad:
            raise CheckpointError(f"{weights}: {len(bad)} weight tensor(s) hold NaN or inf (e.g. {bad[0]}): a diverged or corrupt model")
        expected = model._saved_state()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(model.state_dict()))
        wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        state = {k: v.to(expected[k].dtype) if k in expected else v for k, v in state.items()}
        if missing or unexpected or wrong:
            parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                     f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                     f"{len(wrong)} with wrong shapes (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} vs {tuple(expected[wrong[0]].shape)})" if wrong else ""]
            raise CheckpointError(f"{weights}: weights do not match {CONFIG_FILE}: " + ", ".join(p for p in parts if p))
        model.load_state_dict(state, strict=False)
        model.source_dir = path  # what it was loaded from (evaluation keys resumed runs on these files' content)
        return model.to(map_location).eval()

    def with_config(self, **changes) -> ModelConfig:
        return replace(self.cfg, **changes)
