"""Training on several processes with PyTorch's own launcher: ``torchrun --nproc_per_node N`` runs the same
``backline train ...`` command in N processes, and this room is all a trainer needs for it.

Each step every process draws the same global batch (and the loss's random draws for it) from the run's
seeded generators and keeps its own rows; DistributedDataParallel averages the gradients, so N processes
take the step one process takes on the whole batch, and a run resumes under any number of processes.
Rank 0 alone logs, validates and writes checkpoints. Process groups: gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import distributed as dist


@dataclass(frozen=True)
class Processes:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, global_batch: int) -> slice:
        """This process's rows of a global batch (an equal share each)."""
        if global_batch % self.world:
            raise ValueError(f"the batch of {global_batch} does not split evenly over {self.world} processes")
        share = global_batch // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the processes (every process calls it)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process (so all stop together)."""
        if self.world == 1:
            return flag
        tensor = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item() > 0)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on this process's device, in DistributedDataParallel when there are several processes."""
        model = model.to(self.device)
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def autocast(self):
        """bf16 autocast on CUDA; a no-op on the CPU."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")


def start() -> Processes:
    """Join torchrun's process group when launched by it (``WORLD_SIZE`` > 1), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    return Processes(dist.get_rank() if world > 1 else 0, world, device)


def finish(processes: Processes) -> None:
    """Leave the process group once every process is done (one leaving early aborts the others at exit)."""
    if processes.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
