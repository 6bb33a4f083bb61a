"""The sweep's child processes: each in its own process group, tied to the sweep's life, stopped as a group.

* ``start_new_session``: a run and everything it starts (a launcher's wrapper, its workers) form one process group,
  which the sweep signals as a whole, so no grandchild is left behind when a wrapper dies.
* Linux ``PR_SET_PDEATHSIG``: the kernel sends SIGTERM to the run when the sweep dies, even by SIGKILL; the run also
  watches ``COPRA_PARENT_PID`` (the sweep) in its heartbeat (:mod:`copra_bench.tracking.run_lock`), which covers
  processes under a wrapper and other systems. Either way the run stops at a safe point and is marked KILLED.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from typing import IO

from copra_bench.tracking.run_lock import PARENT_ENV

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def launch(command: list[str], log: IO, env: dict[str, str]) -> subprocess.Popen:
    """Start one run in its own process group, stdout and stderr into ``log``."""
    env = {**env, PARENT_ENV: str(os.getpid())}
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            # only prctl between fork and exec: safe with the sweep's threads (none take locks)
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)  # noqa: PLW1509


def signal_group(process: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the run's whole process group (nothing if it is gone)."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(process: subprocess.Popen, *, grace_s: float) -> int:
    """SIGTERM to the group, SIGKILL after ``grace_s`` seconds; the run's exit status."""
    signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if process.poll() is None:
        signal_group(process, signal.SIGKILL)
    code = process.wait()
    signal_group(process, signal.SIGKILL)  # whatever the run left in its group
    return code


def describe_exit(code: int) -> str:
    """``exit status 1`` / ``killed by SIGKILL`` / ``stopped by SIGTERM (exit 143)``."""
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    if code > 128 and code - 128 in {s.value for s in signal.Signals}:
        return f"stopped by {signal.Signals(code - 128).name} (exit {code})"
    return f"exit status {code}"


def ended_by_signal(code: int) -> bool:
    return code < 0 or code in (128 + signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGKILL)
