"""A trainer under torchrun (2 CPU processes, gloo) takes the steps one process takes on the same global
batch, rank 0 alone writes the run, and the run resumes under 1 process."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import torch

from backline.models.autoencoder import CONFIGS as AE_CONFIGS, Autoencoder, save_autoencoder
from backline.training.diffusion import TrainOptions, train
from backline.models.diffusion import resolve_config
from backline.training.latents import encode_build

ARGS = dict(steps=20, batch_size=4, validate_every=1000, checkpoint_every=10)


def losses(run):
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader((run / "train.csv").open())}


def test_two_processes_train_as_one_and_resume_as_one(synthetic_build, tmp_path):
    torch.manual_seed(0)
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE_CONFIGS["tiny"]).eval(), version="tiny-test")
    latents = tmp_path / "latents"
    encode_build(ae_path, synthetic_build, latents)
    config = resolve_config("tiny")
    one = tmp_path / "one"
    train(config, latents, one, TrainOptions(**ARGS), progress=False)

    two = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "backline",
               "train", "diffusion", "--config", "tiny", "--latents", str(latents), "--run-dir", str(two), "--steps", "20",
               "--batch-size", "4", "--validate-every", "1000", "--checkpoint-every", "10", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [10, 20]
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-3)
    record = json.loads((two / "training.json").read_text())
    assert record["global_batch"] == 4 and record["starts"] == [
        {"step": 0, "processes": 2, "device": "cpu", "per_process_batch": 2}]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # one writer

    for run in (one, two):  # one more stretch in 1 process from each checkpoint: the same continuation
        train(config, latents, run, TrainOptions(**{**ARGS, "steps": 30}), resume=True, progress=False)
    a, b = losses(one), losses(two)
    assert sorted(b) == [10, 20, 30] and abs(b[30] - a[30]) <= 1e-3 * abs(a[30])
    assert json.loads((two / "training.json").read_text())["starts"][-1]["processes"] == 1
