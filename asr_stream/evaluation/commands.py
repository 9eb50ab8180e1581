"""Deprecated: the ``eval`` and ``sweep`` commands moved to :mod:`asr_stream.cli.evaluation`, where they take their
model and stream options as one :class:`~asr_stream.cli.options.StreamOptions`.

``eval_cmd`` and ``sweep_cmd`` stay importable from here, with their old keyword arguments
(``eval_cmd(data, model=..., k=2)``), for code that called them; each call warns (DeprecationWarning). The command
line is looked up at the first use of one of these names (by ``importlib``, not an import statement): nothing in the
package below the command line depends on it, and this module is only an alias for outside code.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = ("eval_cmd", "sweep_cmd")


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cli = importlib.import_module("asr_stream.cli.evaluation")
    options = importlib.import_module("asr_stream.cli.options")
    fn = getattr(cli, name)

    def call(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"asr_stream.evaluation.commands.{name} is deprecated: use asr_stream.cli.evaluation.{name} "
                      "(its options as one StreamOptions)", DeprecationWarning, stacklevel=2)
        return options.flat_call(fn, *args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = fn.__doc__
    return call


__all__ = list(_MOVED)
