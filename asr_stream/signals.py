"""Stopping signals, handled so that a command keeps what it heard.

Ctrl-C (SIGINT) and SIGTERM (what ``timeout``, systemd and container runtimes send) both stop ``transcribe``,
``client`` and ``mic`` the same way: what was heard is finished and kept. :func:`sigterm_as_interrupt` makes
SIGTERM raise :class:`Terminated`, a KeyboardInterrupt; :class:`StepGuard` holds both signals while a session
step runs, so that no decoder step is left half done. Light: no torch, so ``client`` can use it.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout``, systemd and container runtimes send), handled as Ctrl-C is: stop and keep what was
    heard. A KeyboardInterrupt, so every path that keeps the heard part on Ctrl-C keeps it here too; the command
    line exits with 143 (128 + SIGTERM) instead of Ctrl-C's 130."""

    signum = signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, as Ctrl-C raises
    KeyboardInterrupt, whatever SIGINT's disposition is (a job started in the background has SIGINT ignored, never
    SIGTERM). An ignored SIGTERM stays ignored. Outside the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class StepGuard:
    """Hold Ctrl-C (SIGINT) and SIGTERM while a session step runs, so the step is never left half done.

    An interrupt in the middle of a decoder step could leave some layers' caches extended and others
    not; ``finish()`` on that state would fail. After the block, :attr:`hit` tells whether a signal came whose
    handler raises (Python's Ctrl-C handler, :func:`sigterm_as_interrupt`'s), and the caller calls :meth:`reraise`
    once its bookkeeping is done. Another Python handler is called at exit instead; a signal at its default is
    sent again (it terminates, as it would have); an ignored one stays ignored. Signals can only be handled in the
    main thread, so elsewhere this does nothing.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.hit = False
        self.signum: int | None = None
        self._pending: list[int] = []
        self._old: dict[int, object] = {}  # previous handlers (None: not installed from Python)

    def __enter__(self) -> "StepGuard":
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._handler) for sig in self._SIGNALS}
        return self

    def _handler(self, signum, frame) -> None:
        self._pending.append(signum)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(self._pending):
            old = self._old[sig]
            if old is signal.default_int_handler or old is _raise_terminated:
                if not self.hit:
                    self.hit, self.signum = True, sig
            elif callable(old):
                old(sig, None)
            elif old in (signal.SIG_DFL, None):
                os.kill(os.getpid(), sig)  # what would have happened without us: terminate

    def reraise(self) -> None:
        """Raise what the held signal would have raised (KeyboardInterrupt, or :class:`Terminated`), if one came."""
        if self.hit:
            raise Terminated if self.signum == signal.SIGTERM else KeyboardInterrupt


__all__ = ["StepGuard", "Terminated", "sigterm_as_interrupt"]
