"""LightningModule wrapping SpeechLLM. Training glue only: optimiser, schedule, multi-k draws, logging, export."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
import math
import random
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging

from ..audio.io import SAMPLE_RATE
from ..config import ModelConfig
from ..decoder import TextCodec, map_rows, transfer_vocabulary, vocabulary_rows
from ..model import Batch, SpeechLLM


FORMATTED_PROBE = "a, a."  # lower case and marks: what a formatted model's tokenizer must write without <unk>


class SpeechLLMModule(L.LightningModule):
    def __init__(
        self,
        model: ModelConfig = ModelConfig(),
        tokenizer: Optional[str] = None,
        feat_stats: Optional[str] = None,
        init_from: Optional[str] = None,
        init_decoder_from: Optional[str] = None,
        export_dir: Optional[str] = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 500,
        min_lr_ratio: float = 0.05,
        decay_steps: Optional[int] = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            model: the SpeechLLM configuration (encoder, projector, decoder, training mode, k set, φ).
            tokenizer: tokenizer directory for a decoder built from scratch (Phi-3 checkpoints bring their own).
            feat_stats: JSON with log-mel "mean" and "std" lists (own encoder), from the prepare stage.
            init_from: a SpeechLLM directory to start from (its weights; its config must match ``model``). With a
                ``tokenizer`` of another vocabulary (a plain model starting one that writes case and punctuation),
                every weight is kept except the decoder's embeddings and the CTC head's rows, which are mapped token
                by token as :func:`asr_stream.decoder.transfer_vocabulary` does.
            init_decoder_from: a SpeechLLM directory whose decoder starts this model: its tokenizer and decoder
                weights (its decoder config must equal ``model.decoder``); the encoder, projector and CTC head start
                as ``model`` builds them (e.g. the bundled model's decoder behind a new, pretrained encoder). With
                ``tokenizer`` too, the model gets that vocabulary and the decoder's weights with its embeddings mapped
                token by token (:func:`asr_stream.decoder.transfer_vocabulary`): a plain model's decoder starting a
                model that writes case and punctuation.
            export_dir: where the trained model is saved as a SpeechLLM directory (at the end and at each checkpoint).
            lr: peak learning rate (AdamW).
            weight_decay: AdamW weight decay (not applied to biases and norms).
            betas: AdamW betas.
            warmup_steps: linear warm-up steps, then cosine decay to min_lr_ratio * lr at ``decay_steps``.
            min_lr_ratio: final learning rate as a fraction of lr.
            decay_steps: the step where the cosine reaches its end (default: trainer.max_steps). Larger than
                max_steps stops training part-way down the cosine, at a learning rate above the minimum.
            seed: seed of the per-step k draws (identical on every rank).
        """
        super().__init__()
        for name, path, want in (("tokenizer", tokenizer, "dir"), ("init_from", init_from, "dir"), ("feat_stats", feat_stats, "file")):
            if path and not (Path(path).is_dir() if want == "dir" else Path(path).is_file()):
                raise ValueError(f"model.{name} {path}: no such {'folder' if want == 'dir' else 'file'}"
                                 + (" (run the recipe's prepare stage first)" if name != "init_from" else ""))
        if init_decoder_from and init_from:
            raise ValueError("model.init_decoder_from brings its own decoder: leave out model.init_from")
        if init_decoder_from and not Path(init_decoder_from).is_dir():
            raise ValueError(f"model.init_decoder_from {init_decoder_from}: no such folder")
        codec = TextCodec.load(tokenizer) if tokenizer else None
        if init_decoder_from:
            src = SpeechLLM.load(init_decoder_from)
            if src.cfg.decoder != model.decoder:
                raise ValueError(f"{init_decoder_from}: its decoder config differs from model.decoder")
            self.net = SpeechLLM(model, codec or src.codec)
            if codec is None:
                self.net.llm.load_state_dict(src.llm.state_dict())
            else:  # a vocabulary of its own (e.g. cased text): the decoder's weights, embeddings mapped per token
                transfer_vocabulary(src.llm, src.codec, self.net.llm, codec)
            del src
        elif init_from:
            self.net = SpeechLLM.load(init_from).train()  # load() returns eval mode (dropout off) for inference
            # training-only switches (SpecAugment, dropout) may differ: they change no weight
            enc = replace(self.net.cfg.encoder, spec_augment=model.encoder.spec_augment, dropout=model.encoder.dropout,
                          unfrozen_top_layers=model.encoder.unfrozen_top_layers)
            if enc != model.encoder or self.net.cfg.decoder != model.decoder:
                raise ValueError(f"{init_from}: its encoder/decoder config differs from the one given")
            if codec is not None and codec.tok.get_vocab() != self.net.codec.tok.get_vocab():
                self.net = _with_vocabulary(self.net, model, codec)
            self.net.cfg = model
            self.net.encoder.cfg = model.encoder
            self.net.freeze_encoder_as_configured()  # unfrozen_top_layers may differ from the folder's
        else:
            self.net = SpeechLLM(model, codec)
        unk = self.net.codec.tok.unk_token_id
        if model.text_format == "formatted" and unk is not None and unk in self.net.codec.encode(FORMATTED_PROBE):
            raise ValueError("model.model.text_format formatted: the tokenizer cannot write cased, punctuated text "
                             "(train one with prepare(..., text_format='formatted') and give it as model.tokenizer)")
        if feat_stats and hasattr(self.net.encoder, "feat_mean"):
            stats = json.loads(Path(feat_stats).read_text())
            with torch.no_grad():
                self.net.encoder.feat_mean.copy_(torch.tensor(stats["mean"]))
                self.net.encoder.feat_std.copy_(torch.tensor(stats["std"]))
        self.cfg = model
        self.export_dir = export_dir
        if decay_steps is not None and decay_steps <= warmup_steps:
            raise ValueError(f"decay_steps ({decay_steps}) must be larger than warmup_steps ({warmup_steps})")
        self.opt = dict(lr=lr, weight_decay=weight_decay, betas=betas, warmup=warmup_steps, min_ratio=min_lr_ratio,
                        decay_steps=decay_steps)
        self.seed = seed

    # -- steps --------------------------------------------------------------------------------------
    def _batch(self, b) -> Batch:
        contexts = getattr(b, "contexts", None)
        ids = None
        if contexts is not None:
            from ..context import fit_context

            if self.cfg.context_max_tokens == 0:
                raise ValueError("data.context draws context lists, but model.model.context_max_tokens is 0: set it "
                                 "(the longest list in tokens the model learns to read)")
            ids = [fit_context(self.net.codec, c, self.cfg.context_max_tokens) for c in contexts]
        return Batch(b.wave, b.wave_lens, [self.net.codec.encode(t) for t in b.texts], enc=b.enc, context=ids)

    def draw_k(self, step: int) -> Optional[int]:
        """Multi-k training: one k per optimiser step, drawn from cfg.train_k; the same on every rank."""
        if self.cfg.train_mode == "batch":
            return None  # batch mode trains offline
        return random.Random(self.seed * 1_000_003 + step).choice(self.cfg.train_k)

    def training_step(self, b, batch_idx: int):
        k = self.draw_k(self.global_step)
        out = self.net(self._batch(b), mode=self.cfg.train_mode, k=k, phi=self.cfg.phi)
        bs = b.wave.shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=bs)
        self.log("train/ce", out.ce, batch_size=bs)
        if out.ctc is not None:
            self.log("train/ctc", out.ctc, batch_size=bs)
        self.log("train/k", float(k or 0), batch_size=bs)
        self.log("train/audio_s", float(b.wave_lens.sum()) / SAMPLE_RATE, reduce_fx="sum", batch_size=bs)
        return out.loss

    def validation_step(self, b, batch_idx: int):
        k = None if self.cfg.train_mode == "batch" else self.cfg.train_k[len(self.cfg.train_k) // 2]
        out = self.net(self._batch(b), mode=self.cfg.train_mode, k=k, phi=self.cfg.phi)
        self.log("val/loss", out.loss, prog_bar=True, sync_dist=True, batch_size=b.wave.shape[0])
        self.log("val/ce", out.ce, sync_dist=True, batch_size=b.wave.shape[0])

    # -- optimisation -------------------------------------------------------------------------------
    def configure_optimizers(self):
        decay, no_decay = [], []
        for n, p in self.net.named_parameters():
            if p.requires_grad:
                (no_decay if p.dim() < 2 else decay).append(p)
        o = self.opt
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=o["lr"], betas=tuple(o["betas"]))
        total = o["decay_steps"] or (self.trainer.max_steps if self.trainer and self.trainer.max_steps > 0 else 100_000)

        def schedule(step: int) -> float:
            if step < o["warmup"]:
                return (step + 1) / max(1, o["warmup"])
            t = min(1.0, (step - o["warmup"]) / max(1, total - o["warmup"]))
            return o["min_ratio"] + (1 - o["min_ratio"]) * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- export -------------------------------------------------------------------------------------
    def export(self) -> Optional[Path]:
        """Save the model to ``export_dir``: the averaged weights when a weight-averaging callback (EMA / SWA)
        keeps them, so the export always matches the checkpoint's ``state_dict`` and what validation scored."""
        if self.export_dir and self.trainer.is_global_zero:
            return self.exported_net().save(self.export_dir)
        return None

    def exported_net(self) -> SpeechLLM:
        """The weights an export writes: a :class:`WeightAveraging` callback's average model if one is active, else
        the live weights. Checkpoints are saved outside validation (where the callback swaps the two), and at the
        end of fit the callback copies the average into the live model, so both choices agree then."""
        for cb in self.trainer.callbacks if self._trainer is not None else []:
            avg = getattr(cb, "_average_model", None)  # Lightning keeps no public handle on it
            if isinstance(cb, WeightAveraging) and avg is not None:
                return avg.module.net
        return self.net

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["torch_rng_state"] = torch.get_rng_state()  # dropout / SpecAugment continue exactly on resume
        self.export()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])

    def on_train_end(self) -> None:
        self.export()


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 over all parameters (name, bytes): equal digests = identical weights."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class WeightsDigest(L.Callback):
    """Writes each rank's weights digest at the end of fit to ``<dir>/rank<R>.sha256`` (DDP agreement check)."""

    def __init__(self, dir: str) -> None:
        self.dir = Path(dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"rank{trainer.global_rank}.sha256").write_text(weights_digest(pl_module))


def _with_vocabulary(src: SpeechLLM, model: ModelConfig, codec: TextCodec) -> SpeechLLM:
    """``src``'s weights in a model of ``codec``'s vocabulary: the encoder and projector as they are, the decoder by
    :func:`transfer_vocabulary`, the CTC head's rows (one per token) by the same per-token plan."""
    net = SpeechLLM(replace(src.cfg, text_format=model.text_format), codec).train()
    net.encoder.load_state_dict(src.encoder.state_dict())
    net.projector.load_state_dict(src.projector.state_dict())
    transfer_vocabulary(src.llm, src.codec, net.llm, codec)
    if net.ctc_head is not None:  # built from src's config: both have one or neither
        rows, _ = vocabulary_rows(src.codec, codec)
        map_rows(net.ctc_head.weight, src.ctc_head.weight, rows)
        map_rows(net.ctc_head.bias, src.ctc_head.bias, rows)
        if codec.canonical is not None:  # a cased vocabulary: its CTC head hears plain forms only (ctc_loss), so the
            with torch.no_grad():  # others, and forms the plain head had no row for, start silent: the posteriors
                for t, c in enumerate(codec.canonical):  # (and so the source embeddings) are the plain model's
                    if c != t or len(rows[t]) != 1:
                        net.ctc_head.weight[t] = 0.0
                        net.ctc_head.bias[t] = -1e4
    return net
