"""The options several commands share, each declared once: :class:`StreamOptions` (which model, where, and how it
streams) and :class:`EndpointOptions` (where a long stream is cut into utterances).

A command takes such an object whole, as one parameter (``stream: StreamOptions``); the parser
(:mod:`asr_stream.cli.parser`) offers every field as a flag whose help is the field's ``help`` here, so the flags of
``transcribe``, ``mic``, ``serve`` and ``eval`` are the same flags with the same words. A command whose flags are
fewer (``sweep`` crosses its own axes) names the fields it offers with ``Annotated[StreamOptions, Only(...)]``; a
command may say more of a field in its docstring's ``Args:`` (that text then replaces the field's help for that
command). Fields a command does not offer keep their defaults.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal, Optional

from ..config import EvalMode, Mode, PolicyName  # the mode and policy names, written once (the options' choices)
from ..loading import load_model


def option(default: Any, help: str) -> Any:  # noqa: A002 - the word argparse uses
    """A dataclass field with ``default`` and the ``help`` of its command-line flag (a list default: an empty one)."""
    if isinstance(default, list):
        return field(default_factory=list, metadata={"help": help})
    return field(default=default, metadata={"help": help})


_POLICY_HELP = ("read/write policy: waitk (word j after k + j chunks), ctc (word j once the CTC head heard its end) "
                "or confidence (write when the decoder's top token is likely enough, else read); adaptive policies "
                "write word j after k_max + j chunks at the latest (k_max: --k unless given in --policy-args).")


@dataclass(frozen=True)
class StreamOptions:
    """Which model a command runs, where, and how it streams: :meth:`load` gives the model, :meth:`config` its
    stream settings (unset values: the model's training values)."""

    model: Optional[str] = option(None, "model directory (config.json + model.safetensors + tokenizer); default: the "
                                        "bundled model.")
    k: Optional[int] = option(None, "wait-k in chunks (default: 3 if the model was trained with it, else its training k "
                                    "closest to 3).")
    phi: Optional[float] = option(None, "target-group start position (default: the model's training φ).")
    mode: Optional[Mode] = option(None, "group, interleaved or batch (default: the model's training mode).")
    chunk_ms: Optional[int] = option(None, "override the model's chunk length in ms.")
    device: str = option("cpu", "cpu or cuda (where the model runs).")
    encoder_dtype: Literal["float32", "bfloat16"] = option(
        "float32", "float32, or bfloat16 for the encoder's matrix products (about twice as fast on CPUs with bfloat16 "
                   "instructions, slower on others; the decoder stays in its own dtype).")
    policy: PolicyName = option("waitk", _POLICY_HELP)
    policy_args: list[str] = option([], "parameters of the policy as NAME=VALUE: ctc: threshold (0.5), margin (0 "
                                        "chunks), k_max, k_min; confidence: threshold (0.9), k_max, k_min (k_min "
                                        "default: the smallest k the model was trained with).")
    context: Optional[str] = option(None, "context list (prompted hotwords): words and phrases the speech may hold, "
                                          "separated by commas, e.g. \"Zanzibar, Okonkwo\"; the decoder reads them "
                                          "before the transcript. Needs a model trained with context lists (else an "
                                          "error).")
    context_file: Optional[str] = option(None, "the context list from a UTF-8 file (phrases one a line or separated by "
                                               "commas), after --context's.")
    plain: bool = option(False, "write upper-case text without punctuation, as plain models do, from a model that writes "
                                "case and punctuation (text_format formatted); a plain model's text is unchanged.")

    def load(self):
        """The model (:func:`asr_stream.loading.load_model`: device, chunk override and bfloat16 checks)."""
        return load_model(self.model, self.device, self.chunk_ms, self.encoder_dtype)

    def policy_params(self) -> dict[str, Any]:
        """``--policy-args`` as a dict (a malformed item is a one-line ValueError, before any work)."""
        from ..streaming.policy import parse_policy_args

        return parse_policy_args(self.policy_args)

    def context_phrases(self) -> tuple[str, ...]:
        """``--context`` and ``--context-file`` as phrases (() for none; bad input is a one-line ValueError, before any
        work)."""
        from ..context import context_from_options

        return context_from_options(self.context, self.context_file)

    def session_fields(self) -> dict[str, Any]:
        """The stream settings as the keyword arguments of a :class:`~asr_stream.streaming.StreamingSession`."""
        return {"mode": self.mode, "k": self.k, "phi": self.phi, "policy": self.policy,
                "policy_args": self.policy_params(), "context": self.context_phrases(), "plain": self.plain}

    def config(self, m, **more: Any):
        """The stream settings for model ``m`` (:func:`~asr_stream.streaming.defaults.stream_config_for`; ``more``:
        other StreamConfig fields, e.g. ``reencode``)."""
        from ..streaming.defaults import stream_config_for

        return stream_config_for(m, **more, **self.session_fields())


@dataclass(frozen=True)
class EvalStreamOptions(StreamOptions):
    """:class:`StreamOptions` of an evaluation: the mode may be a batch re-encoding baseline too."""

    mode: Optional[EvalMode] = option(None, "group, interleaved, batch (no re-encoding), batch-position or batch-kv "
                                            "(re-encoding baselines) (default: the model's training mode).")


@dataclass(frozen=True)
class EndpointOptions:
    """Where a long stream is cut into utterances (:class:`~asr_stream.streaming.endpoint.EndpointConfig`)."""

    min_silence_ms: float = option(300.0, "a pause this long (ms) after speech ends an utterance.")
    max_segment_s: float = option(20.0, "an utterance is cut after this many seconds of audio even without a pause.")
    vad: Literal["energy", "silero"] = option(
        "energy", "which frames are speech for the endpointer: energy (the level against an adaptive noise floor) or "
                  "silero (the Silero VAD network: keeps speech in white noise at 10 dB SNR where energy loses 16 % of "
                  "the words, benchmarks/results/vad).")

    def config(self):
        """The endpoint rules; ``vad="silero"`` checks that the VAD's weights load before any work starts."""
        from ..streaming.segment import EndpointConfig

        if self.vad == "silero":
            from ..audio.vad import VADError, shared_model

            try:
                shared_model()
            except VADError as e:
                raise ValueError(f"--vad silero: {e}") from None
        return EndpointConfig(min_silence_ms=self.min_silence_ms, max_segment_s=self.max_segment_s, detector=self.vad)


@dataclass(frozen=True)
class Only:
    """``Annotated[StreamOptions, Only("model", "device")]``: the command offers only these fields as flags."""

    names: tuple[str, ...]

    def __init__(self, *names: str) -> None:
        object.__setattr__(self, "names", names)


@dataclass(frozen=True)
class Group:
    """An options parameter of a command: its class and the fields offered as flags, in the class's order."""

    cls: type
    names: tuple[str, ...]

    def build(self, values: dict[str, Any]):
        """The options object from the parsed flags (``values``: this group's fields)."""
        return self.cls(**values)


def option_group(hint: Any) -> Optional[Group]:
    """The :class:`Group` of a parameter's type hint (a dataclass, maybe ``Annotated`` with :class:`Only`), else
    None."""
    only = None
    if typing.get_origin(hint) is typing.Annotated:
        only = next((a for a in hint.__metadata__ if isinstance(a, Only)), None)
        hint = typing.get_args(hint)[0]
    if not (inspect.isclass(hint) and is_dataclass(hint)):
        return None
    names = tuple(f.name for f in fields(hint))
    if only is not None:
        unknown = set(only.names) - set(names)
        if unknown:
            raise TypeError(f"Only{only.names}: {hint.__name__} has no field {sorted(unknown)[0]!r}")
        names = tuple(n for n in names if n in only.names)
    return Group(hint, names)


def flat_call(fn, *args: Any, **kwargs: Any) -> Any:
    """Call command ``fn`` with its options as separate keyword arguments, the way it was called before it took
    options objects (``eval_cmd(data, model=..., k=2)``): the fields of each options parameter are gathered into
    its object. For code that calls a command as a function the old way (deprecated aliases)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    for pname in inspect.signature(fn).parameters:
        group = option_group(hints.get(pname))
        if group is None or pname in kwargs:
            continue
        given = {n: kwargs.pop(n) for n in group.names if n in kwargs}
        if given:
            kwargs[pname] = group.cls(**given)
    return fn(*args, **kwargs)


__all__ = ["EndpointOptions", "EvalStreamOptions", "Group", "Only", "StreamOptions", "flat_call", "option",
           "option_group"]
