"""Each trainer under torchrun (2 CPU processes, gloo) takes the steps one process takes on the same global
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


def torchrun(trainer: str, *args: str) -> None:
    """``backline train TRAINER ARGS`` with ARGS and 20 steps of a global batch of 4 in 2 processes."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "backline",
               "train", trainer, *args, "--steps", "20", "--batch-size", "4", "--validate-every", "1000",
               "--checkpoint-every", "10", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]


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
    torchrun("diffusion", "--config", "tiny", "--latents", str(latents), "--run-dir", str(two))
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


def test_the_autoencoder_trains_in_two_processes_as_in_one_and_resumes_in_one(synthetic_build, tmp_path):
    from backline.models.autoencoder import resolve_config as ae_config
    from backline.training.autoencoder import TrainSettings, train as train_autoencoder

    settings = dict(ARGS, segment_seconds=0.1, log_every=10, validation_crops=4, pitch_crops=0)
    one = tmp_path / "one"
    train_autoencoder(ae_config("tiny"), synthetic_build, one, TrainSettings(**settings), progress=False)
    two = tmp_path / "two"
    torchrun("autoencoder", "--config", "tiny", "--data", str(synthetic_build), "--run-dir", str(two),
             "--segment-seconds", "0.1")
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [10, 20]
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-3)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # one writer
    assert json.loads((two / "training.json").read_text())["starts"][0]["per_process_batch"] == 2

    for run in (one, two):
        train_autoencoder(ae_config("tiny"), synthetic_build, run, TrainSettings(**{**settings, "steps": 30}),
                          resume=True, progress=False)
    a, b = losses(one), losses(two)
    assert sorted(b) == [10, 20, 30] and abs(b[30] - a[30]) <= 1e-3 * abs(a[30])


def test_the_note_head_trains_in_two_processes_as_in_one_and_resumes_in_one(synthetic_build, tiny_latents, tmp_path):
    import dataclasses

    from backline.training.notes import NoteSettings, train_notes

    ae_path, latents = tiny_latents
    settings = NoteSettings(**ARGS, crop_latent_frames=32, note_dim=16, note_blocks=1)
    one = tmp_path / "one"
    train_notes(ae_path, synthetic_build, latents, one, tmp_path / "one.safetensors", settings, progress=False)
    two = tmp_path / "two"
    two.mkdir()  # the targets transcribed once (rank 0 transcribes when there is no cache)
    (two / "labels.npz").write_bytes((one / "labels.npz").read_bytes())
    torchrun("notes", "--init-from", str(ae_path), "--data", str(synthetic_build), "--latents", str(latents),
             "--run-dir", str(two), "--out", str(tmp_path / "two.safetensors"), "--crop-latent-frames", "32",
             "--note-dim", "16", "--note-blocks", "1")
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [10, 20]
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-3)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # one writer

    for run, out in ((one, "one"), (two, "two")):
        train_notes(ae_path, synthetic_build, latents, run, tmp_path / f"{out}.safetensors",
                    dataclasses.replace(settings, steps=30), resume=True, progress=False)
    a, b = losses(one), losses(two)
    assert sorted(b) == [10, 20, 30] and abs(b[30] - a[30]) <= 1e-3 * abs(a[30])


def test_the_style_encoder_trains_in_two_processes_as_in_one_and_resumes_in_one(synthetic_build, tmp_path):
    from backline.engine.style import PromptPrior
    from backline.training.style_prior import train as train_style

    torch.manual_seed(0)
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE_CONFIGS["tiny"]).eval(), version="tiny-test")
    latents = tmp_path / "latents"
    encode_build(ae_path, synthetic_build, latents)
    settings = dict(steps=20, tower_steps=20, batch_size=8, audio_space="tower")
    one = train_style(latents, synthetic_build, tmp_path / "one.safetensors", run_dir=tmp_path / "one", checkpoint_every=10,
                      log=lambda message: None, **settings)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "backline",
               "train", "style", "--latents", str(latents), "--data", str(synthetic_build), "--out",
               str(tmp_path / "two.safetensors"), "--steps", "20", "--tower-steps", "20", "--batch-size", "8",
               "--audio-space", "tower", "--run-dir", str(tmp_path / "two"), "--checkpoint-every", "10"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = (PromptPrior.load(tmp_path / f"{name}.safetensors").weights for name in ("one", "two"))
    assert a.keys() == b.keys() and any(k.startswith("tower.") for k in a)
    for key in a:  # fp16 files: the same weights to fp16's rounding
        np.testing.assert_allclose(b[key], a[key], rtol=2e-2, atol=2e-3, err_msg=key)
    assert one["processes"] == 1 and sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt"]

    for name in ("one", "two"):  # 10 more prior steps in 1 process from each run's checkpoint
        train_style(latents, synthetic_build, tmp_path / f"{name}-more.safetensors", run_dir=tmp_path / name,
                    checkpoint_every=10, log=lambda message: None, **{**settings, "steps": 30})
    a, b = (PromptPrior.load(tmp_path / f"{name}-more.safetensors").weights for name in ("one", "two"))
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=2e-2, atol=2e-3, err_msg=key)


def test_distillation_trains_in_two_processes_as_in_one(synthetic_build, tmp_path):
    from backline.models.diffusion import EDMPrecond, save_denoiser

    torch.manual_seed(0)
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE_CONFIGS["tiny"]).eval(), version="tiny-test")
    latents = tmp_path / "latents"
    encode_build(ae_path, synthetic_build, latents)
    teacher = save_denoiser(tmp_path / "teacher.safetensors", EDMPrecond(resolve_config("tiny")), version="teacher",
                            extra={"guidance": {"cfg_context": 2.0, "cfg_style": 3.0}}, dtype=None)
    one = tmp_path / "one"
    train(resolve_config("tiny"), latents, one, TrainOptions(**ARGS, distill_from=str(teacher), grid_points=18),
          progress=False)
    two = tmp_path / "two"
    torchrun("diffusion", "--distill-from", str(teacher), "--grid-points", "18", "--latents", str(latents),
             "--run-dir", str(two))
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [10, 20]
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-3)
