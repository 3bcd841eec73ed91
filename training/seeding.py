"""Seeded trainers that leave the caller's random state alone.

A trainer's network initialisation and dropout draw from torch's global generator; ``isolated_seed`` runs
the trainer with that generator seeded from the trainer's own arguments and puts the caller's state back
afterwards, so a run is reproducible and nothing outside it changes.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable


def isolated_seed(seed_of: Callable[[dict], int]):
    """Decorate a trainer: ``seed_of(arguments)`` (its bound arguments, defaults applied) gives the seed."""

    def decorate(trainer):
        signature = inspect.signature(trainer)

        @functools.wraps(trainer)
        def run(*args, **kwargs):
            import torch

            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
                torch.manual_seed(seed_of(bound.arguments))
                return trainer(*args, **kwargs)

        return run

    return decorate
