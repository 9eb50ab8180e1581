"""The ``asr-stream`` parser: one subcommand per command function, its flags read from the function's signature and
docstring (:func:`add_command`), and :func:`main`, which runs one and turns a person's mistakes into one line.

Errors a person can cause (bad files, devices, models, options) print one line and exit 2. ``transcribe``,
``client`` and ``mic`` stop on SIGTERM as on Ctrl-C, keeping what was heard (exit status 128 + the signal).
"""

from __future__ import annotations

import sys

from .evaluation import eval_cmd, sweep_cmd
from .files import export, masks, transcribe
from .live import mic
from .options import option_group
from .serving import client, serve


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a person can cause: printed as one line (exit 2) instead of a traceback."""
    from ..audio import AudioError
    from ..audio.sources import AudioSourceError

    errors: list[type[BaseException]] = [AudioError, AudioSourceError, ValueError, OSError]
    # CheckpointError (a ValueError today) lives with torch: only look it up once the model module is loaded,
    # which it must be for one to have been raised, so `masks` stays light
    model_mod = sys.modules.get(__package__.rpartition(".")[0] + ".model")  # asr_stream.model
    if model_mod is not None:
        errors.append(model_mod.CheckpointError)
    return tuple(errors)


def _arg_help(fn) -> dict[str, str]:
    """'Args:' section of a Google-style docstring -> {name: help}."""
    import inspect
    import re

    doc = inspect.getdoc(fn) or ""
    out, name = {}, None
    for line in doc.split("Args:", 1)[1].splitlines() if "Args:" in doc else []:
        m = re.match(r"^\s{4}(\w+): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2)
        elif name and line.strip():
            out[name] += " " + line.strip()
    return {k: v.replace("%", "%%") for k, v in out.items()}  # argparse %-formats help texts ("95 % interval")


def _add_flag(p, pname: str, hint, default, help: str, positional: bool) -> None:  # noqa: A002
    """One flag (or positional argument) of type ``hint``; ``default`` is ``inspect.Parameter.empty`` when
    required."""
    import inspect
    import json as jsonlib
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union and type(None) in args:  # Optional[X]
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    kw: dict = {"help": help}
    if origin is typing.Literal:
        kw.update(choices=list(args), type=type(args[0]))
    elif hint is bool:
        kw.update(action="store_true")
    elif origin is list:
        inner = typing.get_args(hint)[0]
        item = type(typing.get_args(inner)[0]) if typing.get_origin(inner) is typing.Literal else inner
        kw.update(nargs="+" if positional else "*", type=item)
        if typing.get_origin(inner) is typing.Literal:
            kw["choices"] = list(typing.get_args(inner))
    elif origin is dict:
        kw.update(type=jsonlib.loads, metavar="JSON")
    else:
        kw.update(type=hint)
    if positional:
        p.add_argument(pname, **kw)
        return
    if default is inspect.Parameter.empty:
        kw["required"] = True
    else:
        kw["default"] = default
        if kw["help"] and hint is not bool and default not in (None, [], {}):
            kw["help"] += f" (default: {default})".replace("%", "%%")
    flags = [f"--{pname.replace('_', '-')}"] + ([f"--{pname}"] if "_" in pname else [])
    p.add_argument(*flags, dest=pname, **kw)


def add_command(sub, fn, name: str, positional: tuple[str, ...] = ()) -> None:
    """A subcommand whose options come from ``fn``'s signature and docstring (one source of truth).

    A parameter whose type is an options dataclass (:class:`~asr_stream.cli.options.StreamOptions`,
    :class:`~asr_stream.cli.options.EndpointOptions`) gives one flag per field it offers, with the field's help;
    an entry of the same name in ``fn``'s docstring ``Args:`` says it for this command instead. :func:`main` gathers
    the fields back into the object."""
    import dataclasses
    import inspect
    import typing

    doc = inspect.getdoc(fn) or ""
    p = sub.add_parser(name, help=doc.splitlines()[0].replace("%", "%%") if doc else "",
                       description=doc.split("Args:")[0].strip())
    helps = _arg_help(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    groups = {}
    for pname, param in inspect.signature(fn).parameters.items():
        hint = hints.get(pname, str)
        group = option_group(hint)
        if group is None:
            _add_flag(p, pname, hint, param.default, helps.get(pname, ""), pname in positional)
            continue
        groups[pname] = group
        field_hints = typing.get_type_hints(group.cls)
        for f in dataclasses.fields(group.cls):
            if f.name in group.names:
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default
                text = helps.get(f.name) or f.metadata.get("help", "").replace("%", "%%")
                _add_flag(p, f.name, field_hints[f.name], default, text, False)
    p.set_defaults(_fn=fn, _groups=groups)


def build_parser():
    """The ``asr-stream`` parser: one subcommand per command (``train`` is LightningCLI's, see :func:`main`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="asr-stream", description="Streaming speech recognition with a speech LLM "
                                     "(group position encoding, wait-k, one KV cache).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command(sub, transcribe, "transcribe", positional=("files",))
    add_command(sub, mic, "mic")
    add_command(sub, eval_cmd, "eval")
    add_command(sub, sweep_cmd, "sweep")
    add_command(sub, serve, "serve")
    add_command(sub, client, "client", positional=("files",))
    add_command(sub, masks, "masks")
    add_command(sub, export, "export", positional=("ckpt",))
    sub.add_parser("train", help="Train with LightningCLI: asr-stream train fit --config conf/tiny_synthetic.yaml",
                   add_help=False)
    return parser


def _announce_training_mismatches() -> None:
    """Print each TrainingMismatchWarning and ContextWarning once, as one line on stderr; other warnings as Python
    prints them."""
    import warnings

    from ..config import TrainingMismatchWarning
    from ..context import ContextWarning

    python_show, seen = warnings.showwarning, set()

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, (TrainingMismatchWarning, ContextWarning)):
            python_show(message, category, filename, lineno, file, line)
        elif str(message) not in seen:  # once per message, however many sessions (files, utterances) repeat it
            seen.add(str(message))
            print(f"asr-stream: warning: {message}", file=sys.stderr, flush=True)

    warnings.showwarning = show
    warnings.simplefilter("always", TrainingMismatchWarning)  # deduplicated above (Python's "once" is per module)


def parse(argv: list[str]):
    """(command name, command function, its keyword arguments) for ``argv``; the flags of each options parameter
    are gathered into its object (fields a command does not offer keep their defaults). A bad flag: argparse's
    message and SystemExit(2)."""
    args = vars(build_parser().parse_args(argv))
    fn, command = args.pop("_fn"), args.pop("command")
    for pname, group in args.pop("_groups").items():
        args[pname] = group.build({n: args.pop(n) for n in group.names})
    return command, fn, args


def main(argv: list[str] | None = None) -> None:
    """Run ``asr-stream`` with ``argv`` (default: the process's arguments)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "train":  # LightningCLI owns its own parser and reads sys.argv itself
        from ..training.cli import main as train_main

        sys.argv = ["asr-stream train", *argv[1:]]
        train_main(None)
        return
    command, fn, args = parse(argv)
    _announce_training_mismatches()
    from contextlib import nullcontext

    from ..signals import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt() if command in ("transcribe", "client", "mic") else nullcontext():
            fn(**args)
    except KeyboardInterrupt as e:  # Ctrl-C: 130; SIGTERM (signals.Terminated): 143
        sys.exit(128 + int(getattr(e, "signum", 2)))
    except Exception as e:  # noqa: BLE001 - filtered right below; anything else keeps its traceback
        if not isinstance(e, _user_errors()):
            raise
        print(f"asr-stream: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        sys.exit(2)


__all__ = ["add_command", "build_parser", "main", "parse"]
