"""SIGTERM / SIGINT: stop at the next safe point instead of dying mid-write.

A cluster (SLURM, Kubernetes) sends SIGTERM some seconds before it kills a job; Ctrl-C sends SIGINT. The handlers
installed by :func:`install` only record the signal (:data:`STOP`); the run's callback
(:class:`copra_bench.tracking.lifecycle.RunLifecycle`) then stops after the current training step with ``last.ckpt``
written (or after the current validation/test batch), the run is marked KILLED with the reason as its ``end_reason``
tag, and the process exits with ``128 + signal`` (143 for SIGTERM, 130 for SIGINT). A second SIGINT stops at once
(KeyboardInterrupt).

Imports nothing heavy: the sweep uses it too.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """The first stop signal this process received (None until then)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.reason: str | None = None
        #: Where the run stopped (set at the safe point: "after training step N (last.ckpt written)").
        self.where: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """``128 + signal``: what a shell reports for a process that a signal ended."""
        return 128 + int(self.signum or signal.SIGTERM)

    def request(self, signum: int, reason: str | None = None) -> None:
        """Record a stop (also called without a signal, e.g. when the parent sweep died)."""
        if self.signum is None:
            self.signum = int(signum)
            self.reason = reason or f"{signal.Signals(signum).name} received"

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        first = self.signum is None
        self.request(signum)
        if first:
            again = "; Ctrl-C again to stop at once" if signum == signal.SIGINT else ""
            print(f"copra_bench: {signal.Signals(signum).name} received: stopping at the next safe point (after the "
                  f"current step, with last.ckpt written){again}", file=sys.stderr, flush=True)

    def install(self) -> None:
        """Install the handlers (main thread only; a no-op elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self.handle)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def reset(self) -> None:
        """Forget a recorded stop (a process that runs several jobs, e.g. tests calling ``main`` in-process)."""
        self.signum = self.reason = self.where = None


#: The process's stop request.
STOP = StopRequest()


class RunStopped(SystemExit):
    """Raised at a safe point after a stop signal; its code is the process's exit status (143 / 130)."""

    def __init__(self, where: str) -> None:
        super().__init__(STOP.exit_code)
        self.where = where

    def __str__(self) -> str:
        return f"{STOP.reason}; stopped {self.where}"
