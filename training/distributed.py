"""Training on several processes with PyTorch's own launcher: ``torchrun --nproc_per_node N`` runs the same
``backline train ...`` command in N processes, and this room is all a trainer needs for it.

Each step every process draws the same global batch (and the loss's random draws for it) from the run's
seeded generators and keeps its own rows; DistributedDataParallel averages the gradients, so N processes
take the step one process takes on the whole batch, and a run resumes under any number of processes.
Rank 0 alone logs, validates and writes checkpoints. Process groups: gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

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

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor`` (its rows of a batch), concatenated in rank order, with the gradient flowing
        back to each process's own rows (torch.distributed.nn's all_gather); ``tensor`` itself in one process."""
        if self.world == 1:
            return tensor
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor))

    def barrier(self) -> None:
        """Wait until every process is here (for what rank 0 writes first, such as a cache)."""
        if self.world > 1:
            dist.barrier()

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


class LossModule(torch.nn.Module):
    """``loss(model, *inputs)`` as a module's forward: DistributedDataParallel syncs the gradients of what a forward
    call computes, and a trainer's loss calls more of its model than ``forward``."""

    def __init__(self, model: torch.nn.Module, loss):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, *inputs):
        return self.loss(self.model, *inputs)


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


def save_checkpoint(processes: Processes, state: dict, path: Path) -> None:
    """Rank 0 writes ``state`` to ``path`` whole or not at all (a run killed mid-write keeps its last checkpoint)."""
    if not processes.main:
        return
    temporary = Path(path).with_name(Path(path).name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def record_run(run_dir: Path, settings, processes: Processes, step: int) -> None:
    """training.json: the run's settings (a RunSettings), its global batch and learning rate and, per (re)start,
    how many processes took the global batch. Rank 0 calls it."""
    path = Path(run_dir) / "training.json"
    record = json.loads(path.read_text()) if path.is_file() else {"starts": []}
    record["settings"] = dataclasses.asdict(settings)
    record["global_batch"], record["learning_rate"] = settings.batch_size, settings.learning_rate
    record["starts"].append({"step": step, "processes": processes.world, "device": str(processes.device),
                             "per_process_batch": settings.batch_size // processes.world})
    path.write_text(json.dumps(record, indent=1))
