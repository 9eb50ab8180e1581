"""Deprecated: moved to :mod:`asr_stream.serving.fairness` (issue 29: the serving code in one package).

``import asr_stream.fairness`` still works and warns once (DeprecationWarning); it is the same module object as
:mod:`asr_stream.serving.fairness`, so attributes set on one (a test's monkeypatch) are seen through the other.
"""

from __future__ import annotations

import importlib
import sys
import warnings

warnings.warn("asr_stream.fairness is deprecated: import asr_stream.serving.fairness", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("asr_stream.serving.fairness")
