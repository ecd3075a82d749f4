"""Data-parallel training on torch.distributed, started by ``torchrun``: one place for who this
process is, its share of the sampled stream, the gathers that make metrics whole, and the launcher.

``torchrun --nproc_per_node=N -m emoexp train <task> ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`setup` joins the process group (``nccl`` on CUDA, ``gloo`` on CPU). ``emoexp train --nproc N``
and the MLproject parameter ``nproc`` start torchrun through :func:`launch`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Dist:
    """This process's place among the ranks (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def under_torchrun() -> bool:
    """True in a process that torchrun (or another launcher of the env:// kind) started."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_process() -> bool:
    """Rank 0, or no torchrun at all: the process that keeps the records (known before ``setup``)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def setup(device_name: str):
    """-> (:class:`Dist`, torch.device). Joins the process group when started by torchrun with
    more than one rank; on CUDA each rank takes the GPU of its ``LOCAL_RANK``."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or not under_torchrun():
        return SINGLE, None
    import torch.distributed as td

    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name == "cuda" and not cuda:
        raise RuntimeError("device=cuda but no CUDA device is available; use device=cpu or auto")
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)
    if not td.is_initialized():
        td.init_process_group(backend)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    return Dist(td.get_rank(), td.get_world_size(), local, backend), device


class RankLost(RuntimeError):
    """torchrun stopped this rank because another one died."""


def fail_on_sigterm(dist: Dist) -> None:
    """When a rank dies, torchrun sends SIGTERM to the others; make that an exception, so that the
    run ends FAILED with the reason (the default would end the process with the run RUNNING)."""
    if not dist.enabled:
        return
    import signal

    def handler(signum, frame):
        raise RankLost(f"rank {dist.rank}: torchrun stopped this rank (SIGTERM): another rank died")

    signal.signal(signal.SIGTERM, handler)


def teardown(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as td

        td.barrier()


@contextlib.contextmanager
def main_first(dist: Dist) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds the data caches), the other ranks after it."""
    if dist.enabled and not dist.is_main:
        barrier(dist)
    yield
    if dist.enabled and dist.is_main:
        barrier(dist)


def all_sum(values: list[float], dist: Dist) -> list[float]:
    """Element-wise sum over the ranks (float64)."""
    if not dist.enabled:
        return list(values)
    import torch
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64)
    if dist.backend == "nccl":
        t = t.cuda()
    td.all_reduce(t)
    return [float(v) for v in t.cpu()]


def shard(n: int, dist: Dist) -> np.ndarray:
    """Rank ``r``'s contiguous block of ``range(n)`` (blocks in rank order cover it exactly once)."""
    return np.array_split(np.arange(n), dist.world)[dist.rank]


def gather_predictions(local: dict[str, dict[str, Any]], dist: Dist) -> dict[str, dict[str, Any]]:
    """Per-head predictions of each rank's block (:func:`shard`) -> those of the whole set, in
    order, on every rank; the mean loss weighted by each block's size."""
    if not dist.enabled:
        return local
    import torch.distributed as td

    parts: list[Any] = [None] * dist.world
    td.all_gather_object(parts, local)
    out = {}
    for head in local:
        probs = np.concatenate([p[head]["probs"] for p in parts])
        targets = np.concatenate([p[head]["targets"] for p in parts])
        sizes = [len(p[head]["targets"]) for p in parts]
        loss = sum(p[head]["loss"] * s for p, s in zip(parts, sizes)) / max(sum(sizes), 1)
        out[head] = {"probs": probs, "targets": targets, "loss": loss}
    return out


def shard_sampler(base, dist: Dist):
    """Rank ``r``'s share of ONE sampled stream: every rank iterates ``base`` with the same
    generator seed and keeps items ``r, r + W, ...``, cut to a multiple of ``W`` so that every rank
    runs the same number of batches. Weighted draws keep their class ratios; the union over
    ranks is the single-process epoch's stream (less at most W - 1 items)."""
    from torch.utils.data import Sampler

    class _Shard(Sampler[int]):
        def __len__(self) -> int:
            return len(base) // dist.world

        def __iter__(self):
            items = list(base)
            n = len(items) // dist.world * dist.world
            return iter(items[dist.rank:n:dist.world])

    return _Shard()


def wrap_model(net, dist: Dist, device):
    """DistributedDataParallel around ``net`` (BatchNorm -> SyncBatchNorm on CUDA; torch has no
    CPU SyncBatchNorm, so on gloo each rank normalises its own share of the batch)."""
    if not dist.enabled:
        return net
    import torch

    if device.type == "cuda":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None,
        # multimodal nets skip a masked branch's parameters on some batches
        find_unused_parameters=True,
    )


def unwrap(model):
    return getattr(model, "module", model)


def launch(args: list[str], nproc: int) -> int:
    """Run ``emoexp ARGS`` as ``nproc`` ranks on this machine with torchrun; returns its exit code.
    (Across machines, start ``torchrun --nnodes ... -m emoexp ...`` on each yourself.)"""
    # `--`: torchrun's own parser would otherwise take emoexp options that abbreviate its own
    # (--nproc, --monitor) for itself
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "emoexp", "--", *args]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # N ranks on N cores, not N x all cores
    return subprocess.call(cmd, env=env)
