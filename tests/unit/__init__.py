"""Unit tests: one module, function or tool at a time, in process, on tiny models built in code and made-up input."""
