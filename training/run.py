"""What every training run is given: one settings type, which each trainer extends with what is its own.

The fields here mean the same in every trainer (the autoencoder's, the note head's, the denoiser's), so a
command line, a run's saved config and a model card name them alike.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunSettings:
    steps: int = 10_000
    batch_size: int = 8  # the global batch: under torchrun each process takes an equal share of it
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    validate_every: int = 250
    checkpoint_every: int = 250
    seed: int = 0
    time_limit_minutes: float | None = None  # stop (resumably) after this long
