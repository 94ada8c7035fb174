"""Data parallelism through torch.distributed, launched by ``torchrun`` (no home-made launcher).

Gradients are averaged explicitly after each phase (the approach of stylegan2-ada-pytorch) instead of wrapping the
networks in ``DistributedDataParallel``: a StyleGAN2 iteration has four phases (G main, G path-length, D main,
D R1) with different parts of the graph active, double backward for the regularizers, and networks that must be
frozen in each other's phases, which DDP's bucketed hooks do not handle. Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0  # this process's global rank
    world: int = 1  # number of processes
    local_rank: int = 0  # rank on this node (selects the GPU)
    device: torch.device = torch.device("cpu")  # where this process computes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup(device: torch.device) -> DistInfo:
    """Join the process group when torchrun started several processes; one CUDA device per local rank."""
    rank, world, local = env_world()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=rank, world=world, local_rank=local, device=device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_gradients(params) -> None:
    """All-reduce the gradients of ``params`` to their mean over processes (missing grads count as zeros);
    non-finite values are zeroed as in StyleGAN2-ADA."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    if not active():
        for p in params:
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0, posinf=1e5, neginf=-1e5)
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    torch.nan_to_num_(flat, nan=0, posinf=1e5, neginf=-1e5)
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset : offset + n].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n


def mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over processes (identity in one process)."""
    if not active():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Make every process start from rank ``src``'s parameters and buffers."""
    if not active():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src)


def gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()
