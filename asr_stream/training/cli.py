"""``asr-stream train {fit,validate} --config conf/....yaml``: LightningCLI over SpeechLLMModule + SpeechDataModule."""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

from .datamodule import SpeechDataModule
from .module import SpeechLLMModule


class TrainCLI(LightningCLI):
    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        # Resumed checkpoints load with weights_only=True unless asked otherwise: no pickled code runs.
        if "weights_only" in kwargs and kwargs["weights_only"] is None:
            kwargs["weights_only"] = True
        return kwargs

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


def main(args: list[str] | None = None) -> None:
    TrainCLI(SpeechLLMModule, SpeechDataModule, args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
