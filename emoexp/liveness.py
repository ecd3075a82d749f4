"""Is the process behind a run (or a sweep trial) still alive?

A process is named by its host, pid and start time (the start time tells a live process from a
later one that got the same pid). On the same host that is enough to know at once whether it is
alive; from another host only its heartbeat can say, and a heartbeat older than a few intervals
means the process is gone.

Importing this module is cheap (psutil is imported by the functions that use it).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

ALIVE = "alive"
DEAD = "dead"
UNKNOWN = "unknown"
STALE_AFTER = 3  # heartbeat intervals without a beat: the process is taken for dead


def hostname() -> str:
    return socket.gethostname()


def process_start(pid: int) -> float | None:
    """The start time of process ``pid`` (seconds since the epoch, to 0.01 s), None when there
    is no such process."""
    import psutil

    try:
        return round(psutil.Process(int(pid)).create_time(), 2)
    except (psutil.Error, ValueError, OverflowError):
        return None


def this_process() -> dict[str, str]:
    """host, pid and start time of the calling process, as text (MLflow tags, Optuna attrs)."""
    pid = os.getpid()
    start = process_start(pid)
    return {"host": hostname(), "pid": str(pid), "start": "" if start is None else f"{start:.2f}"}


@dataclass
class Liveness:
    state: str   # alive | dead | unknown
    why: str     # one line for people

    @property
    def dead(self) -> bool:
        return self.state == DEAD

    @property
    def alive(self) -> bool:
        return self.state == ALIVE


def check(host: str | None, pid: str | int | None, start: str | float | None = None,
          heartbeat: str | float | None = None, interval: str | float | None = None,
          now: float | None = None) -> Liveness:
    """Whether the process (``host``, ``pid``, ``start``) that last beat at ``heartbeat`` (every
    ``interval`` seconds) is alive. Same host: asked of the operating system (the pid exists and
    started at ``start``). Another host: dead once its heartbeat is ``STALE_AFTER`` intervals old;
    unknown without a heartbeat."""
    now = time.time() if now is None else now
    if host and pid and host == hostname():
        try:
            pid_i = int(pid)
        except (TypeError, ValueError):
            return Liveness(UNKNOWN, f"unreadable pid {pid!r}")
        actual = process_start(pid_i)
        if actual is None:
            return Liveness(DEAD, f"process {pid_i} on {host} is gone")
        if start not in (None, ""):
            try:
                if abs(actual - float(start)) > 1.0:
                    return Liveness(DEAD, f"process {pid_i} on {host} is gone (the pid now belongs to "
                                          "another process)")
            except (TypeError, ValueError):
                pass
        return Liveness(ALIVE, f"process {pid_i} on {host} is running")
    where = f"{host or '?'}:{pid or '?'}"
    try:
        beat = float(heartbeat) if heartbeat not in (None, "") else None
        every = float(interval) if interval not in (None, "") else None
    except (TypeError, ValueError):
        beat = every = None
    if beat is None or every is None:
        return Liveness(UNKNOWN, f"{where} records no heartbeat")
    age = now - beat
    if age > STALE_AFTER * every:
        return Liveness(DEAD, f"no heartbeat from {where} for {age:.0f} s (one every {every:g} s)")
    return Liveness(ALIVE, f"{where} beat {max(age, 0):.0f} s ago")
