"""One run on several processes: DDP through torchrun, one GPU per process (gloo on a CPU).

torchrun starts ``nproc`` copies of the worker with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in
their environment (``Ranks.from_env``). Every rank builds the same model from the same seed and
draws the same batch order; each trains on its own share of each epoch's batches
(``shard_batches``), DDP averaging the gradients, so an epoch's optimizer steps see
``nproc * batch_size`` images each. Validation splits the validation images between the ranks,
each image once, and gathers the probabilities in the images' order, so every rank computes the
same metrics over the whole set. Rank 0 alone writes the database, the log and the checkpoints,
which have the layout of a one-process run's.

Decisions every rank must take together (stop after this step, stop pruned, stop early) are
reduced across the ranks, so no rank waits in a collective another has left. Light at import
(``Ranks`` is read before the worker's heartbeat starts): torch loads in the functions.
"""

from __future__ import annotations

import datetime
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# A collective that waits this long for a peer means the peer is gone; torchrun ends the rest.
COLLECTIVE_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Ranks | None:
        """The ranks torchrun gave this process, or None for a run of one process."""
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return None
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


SHARE_GPUS_VARIABLE = "LEUKTUI_SHARE_GPUS"  # 1: more processes than GPUs, sharing them (a check on one GPU)


def start(ranks: Ranks, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo on a CPU or where processes share a GPU
    (NCCL takes one GPU per process)."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    sharing = device.type == "cuda" and int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world)) > torch.cuda.device_count()
    backend = "nccl" if device.type == "cuda" and not sharing else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_SECONDS))


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def device_of(ranks: Ranks, device: torch.device) -> torch.device:
    """Rank r's device: its local GPU (the scheduler made the run's GPUs visible), or the CPU."""
    import torch

    if device.type == "cuda":
        index = ranks.local_rank % torch.cuda.device_count()  # shared only with $LEUKTUI_SHARE_GPUS=1
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return device


def shard_batches(batches: list[np.ndarray], ranks: Ranks) -> list[np.ndarray]:
    """Rank r's batches of an epoch: every world-th from the r-th, as many for every rank (a
    last few batches that not every rank would get are left out of the epoch, as
    DistributedSampler's ``drop_last`` does)."""
    usable = len(batches) // ranks.world * ranks.world
    return batches[ranks.rank:usable:ranks.world]


def shard_indices(count: int, ranks: Ranks) -> np.ndarray:
    """Rank r's images of a set to predict: every world-th from the r-th, each image once."""
    return np.arange(ranks.rank, count, ranks.world)


def gather_in_order(values: np.ndarray, count: int, ranks: Ranks) -> np.ndarray:
    """Every rank's ``values`` of its ``shard_indices``, put back in the images' order, on every rank."""
    import torch.distributed as dist

    shards: list[Any] = [None] * ranks.world
    dist.all_gather_object(shards, np.asarray(values))
    out = np.empty(count, dtype=np.float64)
    for rank, shard in enumerate(shards):
        out[np.arange(rank, count, ranks.world)] = shard
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on one."""
    import torch
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_main(value: Any) -> Any:
    """Rank 0's ``value``, on every rank."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank, so each rank's share of
    the validation images is scored by the very network rank 0 saves."""
    import torch.distributed as dist

    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def reduce_training(train: dict[str, float], device: torch.device) -> dict[str, float]:
    """An epoch's training figures over every rank: loss and accuracy over all images, the
    images, and the slowest rank's seconds."""
    import torch
    import torch.distributed as dist

    seen = train["images"]
    totals = torch.tensor([train["train_loss"] * seen, train["train_acc"] * seen, seen], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    slowest = torch.tensor([train["seconds"]], dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    images = totals[2].item()
    return {"train_loss": totals[0].item() / max(images, 1), "train_acc": totals[1].item() / max(images, 1),
            "images": int(images), "seconds": slowest.item()}


class SharedStop:
    """A stop request that every rank sees at the same step: ``is_set`` asks all of them (one
    tiny all-reduce), so a SIGTERM to one rank, or a cancel seen by rank 0's heartbeat, stops
    them all after the same step."""

    def __init__(self, local: threading.Event, device: torch.device):
        self.local, self.device = local, device

    def is_set(self) -> bool:
        return any_rank(self.local.is_set(), self.device)

    def set(self) -> None:
        self.local.set()


def augmentation_generator(seed: int, epoch: int, ranks: Ranks):
    """A rank's own generator for an epoch's random augmentation: another stream on each rank and
    in each epoch, the same again when a run resumes at that epoch."""
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 10_007 + ranks.rank) % 2**63)
