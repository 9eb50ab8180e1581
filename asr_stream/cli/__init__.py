"""``asr-stream``, the command line: on top of the package (no module below it imports it).

- :mod:`~asr_stream.cli.parser`: the parser built from the command functions, and :func:`main` (the entry point).
- :mod:`~asr_stream.cli.options`: :class:`StreamOptions` and :class:`EndpointOptions`, the options several commands
  share, each declared once.
- one module per group of commands: :mod:`~asr_stream.cli.files` (``transcribe``, ``export``, ``masks``),
  :mod:`~asr_stream.cli.live` (``mic``), :mod:`~asr_stream.cli.serving` (``serve``, ``client``),
  :mod:`~asr_stream.cli.evaluation` (``eval``, ``sweep``).
"""

from .evaluation import eval_cmd, sweep_cmd
from .files import export, masks, transcribe
from .live import mic
from .options import EndpointOptions, EvalStreamOptions, StreamOptions
from .parser import build_parser, main
from .serving import client, serve

# Deprecated: check_device, load_model and set_encoder_dtype moved to asr_stream.loading (one loader for every
# command) and stay importable from here only for code that used them; import them from asr_stream.loading.
from ..loading import check_device, load_model, set_encoder_dtype  # noqa: E402,F401

__all__ = ["EndpointOptions", "EvalStreamOptions", "StreamOptions", "build_parser", "client", "eval_cmd", "export",
           "main", "masks", "mic", "serve", "sweep_cmd", "transcribe"]
