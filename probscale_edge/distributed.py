"""Data parallelism through the launchers users already run: ``torchrun`` and ``accelerate launch``.

Both set ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; under them the same CLI and Python API spread
the heavy stages over the processes:

* training (teacher fine-tune, recovery / distillation): PyTorch DDP, every global batch split
  across the ranks, so the optimisation is the single-process one (same global batch, same steps);
* forward passes over whole splits (teacher logits, probe features, evaluation): each rank runs a
  contiguous shard and the results are gathered in order.

Everything else (probe fitting, selection, surgery) is cheap and runs on every rank; decisions are
broadcast from rank 0 so all ranks cut the same subnetwork. Only rank 0 writes files. Backend:
NCCL on GPUs, gloo on CPUs. Without a launcher this module is a no-op (world size 1).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

_STATE = {"initialised": False, "collective": False}


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    return world_size() > 1


def device() -> torch.device:
    """This process's device: its GPU under a launcher on a GPU machine, else the CPU."""
    if torch.cuda.is_available() and os.environ.get("PROBSCALE_EDGE_DEVICE", "auto") != "cpu":
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def init() -> None:
    """Join the process group (idempotent). NCCL on GPUs, gloo on CPUs."""
    if not active() or _STATE["initialised"]:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dev = device()
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    _STATE["initialised"] = True


def shutdown() -> None:
    if _STATE["initialised"]:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        _STATE["initialised"] = False


def barrier() -> None:
    if active():
        init()
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj):
    """Rank 0's ``obj`` on every rank (any picklable object)."""
    if not active():
        return obj
    init()
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(n: int) -> tuple[int, int]:
    """This rank's contiguous slice [start, stop) of n items."""
    if not active():
        return 0, n
    bounds = np.linspace(0, n, world_size() + 1).round().astype(int)
    return int(bounds[rank()]), int(bounds[rank() + 1])


def gather_rows(part: np.ndarray, axis: int = 0) -> np.ndarray:
    """Concatenate every rank's ``part`` along ``axis`` in rank order (the inverse of :func:`shard`)."""
    if not active():
        return part
    init()
    import torch.distributed as dist

    parts = [None] * world_size()
    dist.all_gather_object(parts, part)
    return np.concatenate(parts, axis=axis)


@contextlib.contextmanager
def on_device(model):
    """Run ``model`` on this process's device for the block, then put it back on the CPU."""
    dev = device()
    if dev.type == "cpu":
        yield dev
        return
    model.to(dev)
    try:
        yield dev
    finally:
        model.to("cpu")


@contextlib.contextmanager
def collective():
    """Mark a block that every rank runs: forward passes inside it are sharded and gathered.

    Outside such a block (e.g. a check only rank 0 makes) they run whole on the calling rank, so
    a rank never waits on a gather the others do not join."""
    prev = _STATE["collective"]
    _STATE["collective"] = True
    try:
        yield
    finally:
        _STATE["collective"] = prev


def sharded_map(n: int, fn, axis: int = 0) -> np.ndarray:
    """``fn(start, stop)`` -> rows for items [start, stop); inside :func:`collective` each rank
    computes its shard and every rank gets all n rows, in order; elsewhere ``fn(0, n)``."""
    if not (active() and _STATE["collective"]) or n < world_size():
        return fn(0, n)
    start, stop = shard(n)
    return gather_rows(fn(start, stop), axis=axis)
