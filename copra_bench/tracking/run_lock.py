"""One process per run: a lock file with a heartbeat in the run directory, and the same file lock for sweep claims.

``<run dir>/run.lock`` holds ``{"pid", "host", "started", "command"}``; its modification time is the heartbeat (touched
every :data:`HEARTBEAT_S` seconds by a daemon thread). A second process that wants the run (``fit --ckpt_path last``
while the first still trains) gets :class:`RunLockedError` naming the PID and host. A lock is stale, and taken over,
when its process is dead (same host) or its heartbeat is older than ``COPRA_LOCK_STALE_S`` seconds (default 600;
another host, whose processes cannot be checked). Creation is atomic (``O_CREAT | O_EXCL``), so is a take-over
(under a ``mkdir`` mutex), also on a shared file system.

The heartbeat thread also watches the parent sweep (``COPRA_PARENT_PID``): when that process is gone the run stops
itself as if it had received SIGTERM (KILLED, ``last.ckpt`` written), so no orphan goes on training or testing.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from copra_bench.errors import CopraError

log = logging.getLogger("copra_bench")

LOCK_NAME = "run.lock"
HEARTBEAT_S = 30.0
PARENT_ENV = "COPRA_PARENT_PID"


def stale_after_s() -> float:
    return float(os.environ.get("COPRA_LOCK_STALE_S", "600"))


class RunLockedError(CopraError):
    """The run is held by another live process."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LockFile:
    """An exclusive file ``path`` owned by this process (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.held = False

    def holder(self) -> dict[str, Any] | None:
        """The holder's record plus ``age_s`` (seconds since its heartbeat); None when there is no lock."""
        try:
            record = json.loads(self.path.read_text() or "{}")
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            record, age = {}, 0.0  # being written right now
        return {**record, "age_s": age}

    def is_live(self, holder: dict[str, Any]) -> bool:
        if not holder.get("pid"):  # unreadable: live while fresh (a writer is between create and write)
            return holder["age_s"] < 5
        if holder.get("host") == socket.gethostname():
            return pid_alive(int(holder["pid"]))
        return holder["age_s"] < stale_after_s()

    def try_acquire(self, **extra: Any) -> dict[str, Any] | None:
        """Take the lock; None on success, else the live holder's record. A stale lock is taken over."""
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue
                if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                    self.path.unlink(missing_ok=True)  # this very process (an earlier job that did not release)
                    continue
                if self.is_live(holder):
                    return holder
                self._take_over(holder)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(record))
            self.held = True
            return None
        raise CopraError(f"could not take the lock {self.path}: it keeps changing hands")

    def _take_over(self, stale: dict[str, Any]) -> None:
        mutex = self.path.with_name(self.path.name + ".takeover")
        try:
            mutex.mkdir()
        except FileExistsError:
            if time.time() - mutex.stat().st_mtime > 60:  # left by a process that died inside the take-over
                mutex.rmdir()
            time.sleep(0.05)
            return
        try:
            current = self.holder()
            if current is not None and not self.is_live(current) and current.get("pid") == stale.get("pid"):
                log.warning("taking over the stale lock %s of PID %s on %s (heartbeat %.0f s ago)", self.path,
                            stale.get("pid"), stale.get("host"), stale["age_s"])
                self.path.unlink(missing_ok=True)
        finally:
            mutex.rmdir()

    def touch(self) -> bool:
        """Heartbeat; False when the lock is no longer this process's (taken over as stale)."""
        holder = self.holder()
        if holder is None or holder.get("pid") != os.getpid() or holder.get("host") != socket.gethostname():
            return False
        os.utime(self.path)
        return True

    def release(self) -> None:
        if self.held:
            holder = self.holder()
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False


_HELD: list[RunLock] = []


class RunLock:
    """The run directory's lock, with its heartbeat thread (and the parent watch)."""

    def __init__(self, run_dir: Path, *, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.file = LockFile(Path(run_dir) / LOCK_NAME)
        self.heartbeat_s = heartbeat_s
        parent = os.environ.get(PARENT_ENV)
        self.parent_pid = int(parent) if parent and parent.isdigit() else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunLockedError` naming the live holder."""
        holder = self.file.try_acquire(command=" ".join(sys.argv[:3]))
        if holder is not None:
            raise RunLockedError(
                f"run directory {self.file.path.parent} is in use by PID {holder.get('pid')} on host "
                f"{holder.get('host')} (since {holder.get('started')}, heartbeat {holder['age_s']:.0f} s ago): "
                "another process is training or testing this run. Wait for it to end, stop it (SIGTERM: it saves "
                f"last.ckpt), or start a new run without --ckpt_path last. A lock whose process is dead is taken "
                f"over; one of another host after COPRA_LOCK_STALE_S={stale_after_s():.0f} s without heartbeat.")
        _HELD.append(self)
        self._thread = threading.Thread(target=self._beat, name="copra-run-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        warned = False
        while not self._stop.wait(self.heartbeat_s if self.parent_pid is None else min(self.heartbeat_s, 1.0)):
            if self.parent_pid is not None and not pid_alive(self.parent_pid):
                log.warning("the parent process %d is gone: stopping this run", self.parent_pid)
                from copra_bench.signals import STOP

                STOP.request(signal.SIGTERM, f"parent process {self.parent_pid} (the sweep) is gone")
                os.kill(os.getpid(), signal.SIGTERM)
                self.parent_pid = None
            holder = self.file.holder()
            if holder is not None and holder["age_s"] < self.heartbeat_s * 0.9:
                continue
            if not self.file.touch() and not warned:
                warned = True
                log.warning("the run lock %s was taken over by another process", self.file.path)

    def release(self) -> None:
        self._stop.set()
        self.file.release()
        if self in _HELD:
            _HELD.remove(self)


def release_all() -> None:
    """Release every run lock this process holds (the CLI calls it when a subcommand ends)."""
    while _HELD:
        _HELD[-1].release()


atexit.register(release_all)
