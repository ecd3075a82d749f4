"""Fault injection for the kill tests: the process SIGKILLs itself at a named point, as a crash, an
OOM-killer or a lost machine would, so that what a kill leaves behind can be tested.

``EMOEXP_FAULT_KILL_AT="POINT[@EPOCH][#N]"`` (several, comma-separated): die the ``N``-th time
(default the first) the code reaches ``POINT`` (at epoch ``EPOCH``, when given). Points:

=================== ===============================================================================
``epoch_end``       an epoch's checkpoints written and uploaded, its metrics logged
``checkpoint_tmp``  a checkpoint's bytes written to its temporary file, not yet renamed into place
``checkpoint_file`` one checkpoint file of the epoch in place locally (``#N``: after the N-th)
``upload``          the epoch's checkpoint files written locally, none uploaded yet
``log_model``       inside MLflow's ``log_model``: the logged model created (PENDING), not finished
``before_status``   everything logged, the run not yet marked FINISHED
=================== ===============================================================================

``EMOEXP_FAULT_RANK`` (default 0): under DDP, the rank that dies. Unset, nothing happens.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "EMOEXP_FAULT_KILL_AT"
RANK_ENV = "EMOEXP_FAULT_RANK"
POINTS = ("epoch_end", "checkpoint_tmp", "checkpoint_file", "upload", "log_model", "before_status")

_hits: Counter = Counter()


def _specs() -> list[tuple[str, int | None, int]]:
    out = []
    for part in os.environ.get(ENV, "").split(","):
        part = part.strip()
        if not part:
            continue
        part, _, nth = part.partition("#")
        name, _, epoch = part.partition("@")
        out.append((name.strip(), int(epoch) if epoch.strip() else None, int(nth) if nth.strip() else 1))
    return out


def point(name: str, epoch: int | None = None) -> None:
    """SIGKILL this process if ``$EMOEXP_FAULT_KILL_AT`` names this point (and epoch) and this is
    the hit it asks for. Free when the variable is unset."""
    if not os.environ.get(ENV):
        return
    rank = os.environ.get("RANK", "0") or "0"
    if rank != (os.environ.get(RANK_ENV, "0") or "0"):
        return
    for want, want_epoch, nth in _specs():
        if want != name or (want_epoch is not None and want_epoch != epoch):
            continue
        _hits[(want, want_epoch)] += 1
        if _hits[(want, want_epoch)] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
