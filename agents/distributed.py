"""Data parallel for the sequence-level agents, on ``torch.distributed`` (docs/design.md section 8).

Launch the same script with ``torchrun --nproc_per_node N`` (or ``accelerate launch --num_processes
N``): every process becomes a *rank*, runs its own envs on its own prompt stream, collects its own
episodes, and before every optimizer step the gradients are summed across ranks and divided by the
world size, which is what ``DistributedDataParallel`` does. Parameters therefore stay identical on
every rank. The agents' update calls the policy's own methods (teacher-forced forwards), not one
``forward``, so the reduction is written here on ``torch.distributed.all_reduce`` instead of wrapping
the policy in DDP; no other communication exists.

What must be global, not per rank, goes through a :class:`DataParallel` (``world_size`` 1: every
method is the identity, so single-process numerics are unchanged):

* each minibatch loss is re-weighted so that the averaged gradient is the gradient of the mean over
  *all* ranks' tokens (or episodes): :meth:`DataParallel.loss_scale`;
* advantage whitening, REINFORCE's baseline, the adaptive KL controller's KL and the logged ``rlhf/*``
  use sums over ranks (:meth:`DataParallel.sum`, :meth:`DataParallel.gather`);
* ``num_timesteps`` counts tokens over all ranks, so ``total_timesteps`` means the same at any world
  size; training stops on every rank together.

GRPO/RLOO groups never straddle ranks: a group is ``group_size`` envs of one rank.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

BUCKET_ELEMENTS = 1 << 24
"""Gradients are all-reduced in flat buckets of at most this many elements (64 MB of fp32)."""


def launched_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` / ``accelerate launch`` (1 when not launched by them)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_launcher(device: torch.device) -> None:
    """Initialise the default process group when a launcher asked for one and nobody did yet.

    ``torchrun`` and ``accelerate launch`` set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
    and ``MASTER_PORT``; the ``env://`` rendezvous reads them. Backend: gloo for CPU tensors, and on CUDA
    also NCCL for CUDA tensors (``"cpu:gloo,cuda:nccl"``: the agents reduce small statistics on the CPU
    and gradients where they live), each rank on its own GPU ``cuda:LOCAL_RANK``. (Not yet run on GPUs:
    no GPU was available to the project; docs/scaling.md.)
    """
    import torch.distributed as dist

    if launched_world_size() > 1 and dist.is_available() and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend="cpu:gloo,cuda:nccl")
        else:
            dist.init_process_group(backend="gloo")


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run and the reductions the agents need.

    Attributes:
        rank: this process's index, ``0 .. world_size - 1``.
        world_size: number of processes training together (1: not distributed).
    """

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls, device: torch.device | None = None) -> DataParallel:
        """The running group (initialised from the launcher's environment if needed), or a single process."""
        import torch.distributed as dist

        init_from_launcher(device or torch.device("cpu"))
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, checkpoints and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def seed(self, seed: int | None) -> int | None:
        """This rank's seed: ``seed`` itself on rank 0 (a 1-process run is unchanged), an independent
        stream from ``SeedSequence([seed, rank])`` elsewhere, so no two ranks draw the same prompts."""
        if seed is None or self.rank == 0:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over ranks (a new tensor; the input is untouched)."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        out = tensor.detach().clone()
        dist.all_reduce(out)
        return out

    def all(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank (every rank gets the same answer)."""
        if not self.distributed:
            return flag
        return bool(self.sum(torch.tensor([0.0 if flag else 1.0]))[0] == 0)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenation over ranks, in rank order, along the first dimension (same shape on every rank)."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def mean(self, values: torch.Tensor) -> float:
        """Mean of ``values`` pooled over every rank's elements."""
        total = self.sum(torch.stack([values.double().sum(), torch.tensor(float(values.numel()), dtype=torch.float64)]))
        return float(total[0] / total[1])

    def loss_scale(self, weight: float, stats: dict[str, float]) -> tuple[float, dict[str, float]]:
        """``(scale, global_stats)`` for one minibatch whose loss is a mean over ``weight`` items.

        With ``loss * scale`` on every rank, the gradient averaged over ranks is the gradient of the mean
        over all ranks' items: ``scale = weight * world_size / sum(weight)``. ``global_stats`` are the
        stats averaged with the same weights, identical on every rank (the ``target_kl`` early stop reads
        them, so every rank stops together). One all-reduce.
        """
        if not self.distributed:
            return 1.0, stats
        keys = sorted(stats)
        packed = torch.tensor([weight] + [weight * stats[k] for k in keys], dtype=torch.float64)
        total = self.sum(packed)
        if total[0] <= 0:
            return 0.0, stats
        return weight * self.world_size / float(total[0]), {
            k: float(total[i + 1] / total[0]) for i, k in enumerate(keys)
        }

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace every trainable parameter's gradient by its mean over ranks (flat buckets, in place).

        A parameter without a gradient on this rank takes zeros, so every rank reduces the same buffers in
        the same order; one without a gradient on *every* rank gets ``None`` back, so the optimizer skips
        it as it would in one process.
        """
        if not self.distributed:
            return
        params = [p for p in parameters if p.requires_grad]
        had_grad = self.sum(torch.tensor([p.grad is not None for p in params], dtype=torch.float64))
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        bucket: list[torch.Tensor] = []
        size = 0
        for g in grads:
            if bucket and size + g.numel() > BUCKET_ELEMENTS:
                self._reduce_bucket(bucket)
                bucket, size = [], 0
            bucket.append(g)
            size += g.numel()
        if bucket:
            self._reduce_bucket(bucket)
        for p, n in zip(params, had_grad.tolist(), strict=True):
            if n == 0:
                p.grad = None

    def _reduce_bucket(self, grads: list[torch.Tensor]) -> None:
        flat = self.sum(torch.cat([g.reshape(-1) for g in grads])) / self.world_size
        for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(part.view_as(g))

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (DDP does the same at construction)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def check_same(self, **values: int) -> None:
        """Raise unless every value is the same on every rank (one all-gather).

        Raises:
            ValueError: ranks disagree (names the values, which must be equal for the ranks to stay in step:
                they decide how many collectives each rank makes).
        """
        if not self.distributed:
            return
        names = sorted(values)
        table = self.gather(torch.tensor([[float(values[k]) for k in names]])).long()  # (world, len(names))
        bad = [f"{k} {table[:, i].tolist()}" for i, k in enumerate(names) if bool((table[:, i] != table[0, i]).any())]
        if bad:
            raise ValueError(
                f"ranks disagree on {', '.join(bad)}: every rank must run the same configuration, only its "
                f"prompt stream differs"
            )


def is_main_process() -> bool:
    """False only on ranks other than 0 of an initialised process group (scripts write files on rank 0 only)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0
