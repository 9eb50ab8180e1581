"""``asr-stream train {fit,validate} --config conf/....yaml``: LightningCLI over SpeechLLMModule + SpeechDataModule."""

from __future__ import annotations

import sys

from pathlib import Path

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from .datamodule import SpeechDataModule
from .module import SpeechLLMModule


class RunConfig(SaveConfigCallback):
    """The resolved config of a run, written into its logger's folder (versioned per run: no earlier run's file is
    replaced). A run without a logger writes none: Lightning would put it in the working directory, where it can be
    the very config file the run was started from (it replaced the repository's own ``config.yaml`` once)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.logger is None:
            return
        target = (Path(trainer.log_dir or ".") / self.config_filename).resolve()
        inputs = {Path(str(c)).resolve() for c in (self.config.get("config") or [])}
        if target in inputs:
            print(f"asr-stream train: not writing the run's config over its input {target}", file=sys.stderr)
            return
        super().setup(trainer, pl_module, stage)


class TrainCLI(LightningCLI):
    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        # Resumed checkpoints load with weights_only=True unless asked otherwise: no pickled code runs.
        if "weights_only" in kwargs and kwargs["weights_only"] is None:
            kwargs["weights_only"] = True
        return kwargs

    def add_arguments_to_parser(self, parser) -> None:
        # One switch for what the model writes: the data module gives the transcripts model.model.text_format names.
        parser.link_arguments("model.model.text_format", "data.targets")

    def init_parser(self, **kwargs):
        # A bad option or config key is the user's input: one line (the message) instead of ~100 lines of usage
        # before it; `--help` still prints everything. Errors jsonargparse raises internally (exit_on_error off)
        # keep their path.
        parser = super().init_parser(**kwargs)
        original = parser.error

        def one_line(message: str, ex: Exception | None = None):
            if not parser.exit_on_error:
                return original(message, ex)
            print(f"asr-stream train: error: {str(message).strip().splitlines()[0] if str(message).strip() else 'bad arguments'}"
                  " (see --help)", file=sys.stderr)
            sys.exit(2)

        parser.error = one_line
        return parser

    def instantiate_classes(self) -> None:
        # A config the module or data module refuses (ValueError, DataError) is the user's input: one line,
        # exit status 2, nothing trained. Errors once training runs keep their tracebacks.
        try:
            super().instantiate_classes()
        except ValueError as e:
            print(f"asr-stream train: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
            sys.exit(2)


    def before_fit(self) -> None:
        # data.features: the cache must hold this model's frozen encoder's outputs for this data: one line if not
        from .features import cache_meta, check_cache

        dm, net = self.datamodule, self.model.net
        if getattr(dm, "features", None):
            try:
                if net.cfg.encoder.trains:
                    raise ValueError("data.features: cached encoder outputs need a frozen encoder "
                                     "(model.model.encoder.freeze: true, unfrozen_top_layers: 0)")
                dm.setup("fit")
                check_cache(dm.features, cache_meta(net.encoder, net.cfg.encoder, dm.train_specs, dm.sample_utterances,
                                                    dm.speeds, dm.augment, dm.seed, dm.max_utterances, "",
                                                    dm.targets))
            except ValueError as e:
                print(f"asr-stream train: error: {str(e).splitlines()[0]}", file=sys.stderr)
                sys.exit(2)

    def after_fit(self) -> None:
        # max_time is a safety stop. It counts wall time, pauses included (a SIGSTOP, a busy machine). A run it
        # stopped before max_steps has exported a model of fewer steps than configured. A recipe must not carry on
        # and evaluate that as if it were the run it asked for, so exit with status 3: resumable, nothing lost.
        from lightning.pytorch.callbacks import Timer

        t = self.trainer
        timer = next((cb for cb in t.callbacks if isinstance(cb, Timer)), None)
        if t.max_steps > 0 and t.global_step < t.max_steps and timer is not None and timer.time_remaining() <= 0:
            print(f"asr-stream train: error: max_time ({timer.time_elapsed():.0f} s) stopped the run at step "
                  f"{t.global_step} of max_steps {t.max_steps}: any model it exported has {t.global_step} steps. Resume "
                  "with --ckpt_path <checkpoint dir>/last.ckpt and a longer --trainer.max_time", file=sys.stderr)
            sys.exit(3)


def main(args: list[str] | None = None) -> None:
    TrainCLI(SpeechLLMModule, SpeechDataModule, args=args, save_config_callback=RunConfig,
             save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
