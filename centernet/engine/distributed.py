"""Training on several processes with ``torchrun``: process group, data order, SyncBN, reductions.

One process per GPU (or several CPU processes with gloo)::

    torchrun --nproc_per_node 8 -m centernet train --config configs/centernet_dla34_140e_coco.yml ...
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 8 \\
        -m centernet train ...          # and --node_rank 1 on the second machine

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` reads them.
Without them everything here is a no-op and training runs in one process.

The data order is one permutation per epoch drawn from ``(seed, epoch)`` whatever the number of
processes: optimizer step ``s`` uses the same images as step ``s`` of a one-process run whose
batch is ``batch_size x world_size x accumulate`` (:class:`EpochBatchSampler`), and the loss of a
step is normalised over that whole step (see ``trainer.step_loss_scales``), so the gradients
are those of the one-process run; with synchronised BatchNorm (``convert_sync_batchnorm``) so are its statistics.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Process:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and plots and runs the validation."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device, timeout_minutes: float = 60) -> tuple[Process, torch.device]:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU); returns this process and its device.

    On CUDA each process takes GPU ``LOCAL_RANK``. A process group already set up is reused.
    """
    if not launched_by_torchrun():
        return Process(), device
    process = Process(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        device = torch.device("cuda", process.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes),
                                **({"device_id": device} if device.type == "cuda" else {}))
    return process, device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all processes (in place; the tensor itself with one process)."""
    if _active():
        dist.all_reduce(tensor)
    return tensor


def broadcast_object(value: Any, src: int = 0) -> Any:
    """``value`` of process ``src`` on every process (objects made by our own processes only)."""
    if not _active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def barrier() -> None:
    if _active():
        dist.barrier()


class EpochBatchSampler(Sampler[list[int]]):
    """The micro-batches of one epoch for one process, in an order fixed by ``(seed, epoch)``.

    The epoch's permutation is ``torch.randperm(size)`` from a generator seeded with
    ``seed * 100003 + epoch``. Optimizer step ``s`` takes the next ``batch_size * world_size *
    accumulate`` items of it; micro-batch ``m`` of process ``r`` in that step is the slice
    ``[(m * world_size + r) * batch_size, ... + batch_size)``. An incomplete last step is dropped,
    except that a data set smaller than one step gives a single (smaller) step in one process.
    ``start_step`` skips the first steps (resuming in the middle of an epoch).

    ``plan[s]`` lists step ``s``'s micro-batches of this process; iterating yields them in order.
    """

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 accumulate: int = 1, start_step: int = 0):
        step_items = batch_size * world_size * accumulate
        if size < step_items and world_size > 1:
            raise ValueError(f"{size} training images are fewer than one optimizer step takes "
                             f"(batch {batch_size} x {world_size} processes x accumulate {accumulate})")
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(size, generator=generator).tolist()
        steps = max(size // step_items, 1)
        plan = []
        for step in range(steps):
            items = order[step * step_items:(step + 1) * step_items]
            micro_batches = [items[(m * world_size + rank) * batch_size:(m * world_size + rank + 1) * batch_size]
                             for m in range(accumulate)]
            plan.append([batch for batch in micro_batches if batch])
        self.plan = plan[start_step:]
        self.start_step = start_step

    def __iter__(self) -> Iterator[list[int]]:
        for step in self.plan:
            yield from step

    def __len__(self) -> int:
        return sum(len(step) for step in self.plan)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward also sums the gradients (each process's input feeds all)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose statistics are synchronised across CPU processes (gloo), where torch's
    ``SyncBatchNorm`` refuses to run (and DDP refuses it on CPU modules).

    In training mode with several processes the batch mean and the (biased) variance come from
    sums all-reduced over the processes, in two passes for accuracy, so they are those of one
    BatchNorm over the concatenated batch; the running statistics update as BatchNorm's (unbiased
    variance). Otherwise it is plain BatchNorm. Same parameters, buffers and state-dict names.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not _active():
            return super().forward(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)
        local_count = input.new_full((1,), input.numel() / channels)
        sums = _AllReduceSum.apply(torch.cat([input.sum(dims), local_count]))  # [C + 1]
        count = sums[-1]
        mean = sums[:-1] / count  # [C]
        centered = input - mean.view(shape)
        variance = _AllReduceSum.apply((centered * centered).sum(dims)) / count  # [C]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(variance.detach() * count / (count - 1).clamp(min=1), factor)
        output = centered * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` synchronised across processes: torch's ``SyncBatchNorm`` on
    CUDA, :class:`CpuSyncBatchNorm` on CPU. Parameters and buffers are carried over (shared)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    converted = model
    if isinstance(model, nn.modules.batchnorm._BatchNorm) and not isinstance(model, CpuSyncBatchNorm):
        converted = CpuSyncBatchNorm(model.num_features, model.eps, model.momentum, model.affine,
                                     model.track_running_stats)
        if model.affine:
            converted.weight, converted.bias = model.weight, model.bias
        converted.running_mean, converted.running_var = model.running_mean, model.running_var
        converted.num_batches_tracked = model.num_batches_tracked
        converted.train(model.training)
    for name, child in model.named_children():
        converted.add_module(name, convert_sync_batchnorm(child, device))
    return converted
