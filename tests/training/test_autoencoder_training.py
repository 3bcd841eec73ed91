"""Training, shipping, evaluating and timing the autoencoder, on a tiny config and synthetic audio."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from backline.cli import main
from backline.models.autoencoder import CONFIGS, Autoencoder, load_autoencoder
from backline.training.autoencoder import (
    CropSampler,
    autoencoder_losses,
    draw_latent_noise,
    load_checkpoint,
    measure_latent_std,
    split_files,
)
from backline.training.autoencoder_eval import low_pass, quality_metrics, si_sdr_db

SAMPLE_RATE = 44_100


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _train_args(build, run, steps, *extra):
    return ["train", "autoencoder", "--config", "tiny", "--data", str(build), "--run", str(run),
            "--steps", str(steps), "--batch-size", "2", "--segment-seconds", "0.25",
            "--validate-every", "3", "--checkpoint-every", "3", "--quiet", *extra]


def test_loss_decreases_on_a_fixed_signal():
    torch.manual_seed(0)
    model = Autoencoder(CONFIGS["tiny"])
    t = torch.arange(8192) / SAMPLE_RATE
    audio = torch.stack([0.3 * torch.sin(2 * torch.pi * 110 * t), 0.2 * torch.sign(torch.sin(2 * torch.pi * 220 * t))])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        noise = draw_latent_noise(model.config, 2, audio.shape[-1], generator)
        loss = autoencoder_losses(model, audio, latent_noise=noise)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


@pytest.mark.parametrize("name", ["tiny", "tiny-advance"])
def test_absolute_phase_losses_reach_the_phase_head_only_when_the_phase_is_absolute(name):
    """With phase="advance" the waveform L1 and complex-spectrum terms train the magnitudes only; the
    frequency and magnitude terms still reach the advances."""
    torch.manual_seed(0)
    model = Autoencoder(CONFIGS[name])
    bins = model.config.n_fft // 2 + 1
    audio = torch.randn(2, 4 * model.config.hop_length) * 0.1
    gradients = {}
    for term in ("waveform_l1", "stft_phase", "stft_log_magnitude"):
        model.zero_grad()
        autoencoder_losses(model, audio)[term].backward()
        gradients[term] = float(model.dec_head.weight.grad[bins:].abs().sum())
    assert gradients["stft_log_magnitude"] > 0
    if name == "tiny-advance":
        assert gradients["waveform_l1"] == 0 and gradients["stft_phase"] == 0
    else:
        assert gradients["waveform_l1"] > 0 and gradients["stft_phase"] > 0


@pytest.mark.parametrize("frequency_hz, pitch_class", [(55.0, 9), (65.41, 0), (82.41, 4), (98.0, 7), (146.83, 2)])
def test_chroma_frames_name_a_bass_note(frequency_hz, pitch_class):
    from backline.training.autoencoder import chroma_frames

    t = torch.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    chroma = chroma_frames(0.3 * torch.sin(2 * torch.pi * frequency_hz * t)[None], SAMPLE_RATE, 2048)[0]
    assert chroma.shape == (12, 2 * SAMPLE_RATE // 2048 + 1)
    assert int(chroma[:, 5:-5].sum(dim=1).argmax()) == pitch_class


def test_the_pitch_head_trains_the_encoder_only_when_asked():
    torch.manual_seed(0)
    audio = torch.randn(2, 4 * 256) * 0.1
    plain = Autoencoder(CONFIGS["tiny"])
    assert not hasattr(plain, "pitch_head") and float(autoencoder_losses(plain, audio)["latent_pitch"]) == 0
    model = Autoencoder(CONFIGS["tiny-advance"])
    losses = autoencoder_losses(model, audio)
    assert 0 < float(losses["latent_pitch"].detach()) <= 2
    losses["latent_pitch"].backward()
    assert float(model.enc_out[1].weight.grad.abs().sum()) > 0 and model.dec_head.weight.grad is None


def test_losses_are_zero_for_a_perfect_reconstruction():
    audio = torch.randn(2, 4096) * 0.1
    from backline.training.autoencoder import stft_distances

    distances = stft_distances(audio, audio)
    for value in distances.values():
        assert float(value) == pytest.approx(0.0, abs=1e-6)


def test_train_cli_runs_and_resumes_exactly(synthetic_build, tmp_path):
    run = tmp_path / "run"
    assert main(_train_args(synthetic_build, run, 6)) == 0
    for name in ("config.json", "checkpoint.pt", "train.csv", "validation.csv", "curves.png"):
        assert (run / name).is_file(), name
    assert load_checkpoint(run)["step"] == 6
    assert [int(r["step"]) for r in _rows(run / "validation.csv")] == [3, 6]

    with pytest.raises(FileExistsError, match="pass --resume"):
        main(_train_args(synthetic_build, run, 10))
    assert main(_train_args(synthetic_build, run, 10, "--resume")) == 0
    resumed = load_checkpoint(run)
    assert resumed["step"] == 10
    assert [int(r["step"]) for r in _rows(run / "train.csv")] == [6, 10]
    assert [int(r["step"]) for r in _rows(run / "validation.csv")] == [3, 6, 9, 10]

    # The same 10 steps in one go give the same weights: the resume restored optimiser and RNGs.
    straight = tmp_path / "straight"
    assert main(_train_args(synthetic_build, straight, 10)) == 0
    for name, tensor in load_checkpoint(straight)["model"].items():
        torch.testing.assert_close(resumed["model"][name], tensor, atol=1e-6, rtol=1e-5)


def test_decoder_only_training_keeps_the_latent_space(synthetic_build, tmp_path):
    """--init-from FILE --freeze-encoder: the shipped result encodes exactly as FILE does (same encoder
    weights, same latent scale), while the decoder has moved."""
    first = tmp_path / "first"
    assert main(_train_args(synthetic_build, first, 3)) == 0
    assert main(["ship", "autoencoder", "--run", str(first), "--to", str(tmp_path / "a.safetensors"),
                 "--crops", "4"]) == 0
    tuned = tmp_path / "tuned"
    assert main(["train", "autoencoder", "--init-from", str(tmp_path / "a.safetensors"), "--freeze-encoder",
                 "--quiet-share", "0.5", "--data", str(synthetic_build), "--run", str(tuned), "--steps", "3",
                 "--batch-size", "2", "--segment-seconds", "0.25", "--quiet"]) == 0
    assert main(["ship", "autoencoder", "--run", str(tuned), "--to", str(tmp_path / "b.safetensors"),
                 "--crops", "4"]) == 0
    a, _ = load_autoencoder(tmp_path / "a.safetensors")
    b, _ = load_autoencoder(tmp_path / "b.safetensors")
    assert a.config == b.config
    audio = torch.randn(1, 3 * a.config.hop_length) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(a.encode(audio), b.encode(audio), rtol=0, atol=0)
        assert not torch.equal(a.dec_head.weight, b.dec_head.weight)
    with pytest.raises(SystemExit, match="needs --init-from"):
        main(["train", "autoencoder", "--freeze-encoder", "--data", str(synthetic_build), "--run", str(tmp_path / "x")])


def test_a_pitch_head_can_be_added_to_a_model_it_starts_from(synthetic_build, tmp_path):
    """--init-from FILE --pitch-weight W: FILE has no pitch head; the run starts from FILE's weights with a fresh
    head whose loss reaches the encoder, and the shipped model carries the weight in its config."""
    first = tmp_path / "first"
    assert main(_train_args(synthetic_build, first, 2)) == 0
    assert main(["ship", "autoencoder", "--run", str(first), "--to", str(tmp_path / "a.safetensors"), "--crops", "4"]) == 0
    pitched = tmp_path / "pitched"
    assert main(["train", "autoencoder", "--init-from", str(tmp_path / "a.safetensors"), "--pitch-weight", "2",
                 "--data", str(synthetic_build), "--run", str(pitched), "--steps", "2", "--batch-size", "2",
                 "--segment-seconds", "0.25", "--quiet"]) == 0
    assert main(["ship", "autoencoder", "--run", str(pitched), "--to", str(tmp_path / "b.safetensors"),
                 "--crops", "4"]) == 0
    a, _ = load_autoencoder(tmp_path / "a.safetensors")
    b, _ = load_autoencoder(tmp_path / "b.safetensors")
    assert a.config.train_pitch_weight == 0 and b.config.train_pitch_weight == 2
    assert not hasattr(a, "pitch_head") and hasattr(b, "pitch_head")
    assert not torch.equal(a.enc_out[1].weight, b.enc_out[1].weight)  # the encoder trained on from a's weights


def test_loss_settings_can_change_on_a_decoder_fine_tune(synthetic_build, tmp_path):
    """--stft-resolutions and --frequency-weight replace the started-from model's loss settings (the run's
    config records them) while --freeze-encoder keeps its encoder, hence its latents, exactly."""
    first = tmp_path / "first"
    assert main(_train_args(synthetic_build, first, 2)) == 0
    assert main(["ship", "autoencoder", "--run", str(first), "--to", str(tmp_path / "a.safetensors"), "--crops", "4"]) == 0
    tuned = tmp_path / "tuned"
    assert main(["train", "autoencoder", "--init-from", str(tmp_path / "a.safetensors"), "--freeze-encoder",
                 "--stft-resolutions", "256", "1024", "4096", "--frequency-weight", "0.5",
                 "--data", str(synthetic_build), "--run", str(tuned), "--steps", "2", "--batch-size", "2",
                 "--segment-seconds", "0.25", "--quiet"]) == 0
    model = json.loads((tuned / "config.json").read_text())["model"]
    assert model["train_stft_resolutions"] == [256, 1024, 4096] and model["train_frequency_weight"] == 0.5
    assert main(["ship", "autoencoder", "--run", str(tuned), "--to", str(tmp_path / "b.safetensors"), "--crops", "4",
                 "--version", "0.0.1+decoder2"]) == 0
    a, a_meta = load_autoencoder(tmp_path / "a.safetensors")
    b, b_meta = load_autoencoder(tmp_path / "b.safetensors")
    assert torch.equal(a.enc_out[1].weight, b.enc_out[1].weight) and not torch.equal(a.dec_head.weight, b.dec_head.weight)
    # the same latent space under a new version: a denoiser trained on a's latents stays valid with b
    assert a.config.latent_space == a_meta["backline_version"] == b.config.latent_space != b_meta["backline_version"]


def test_resume_refuses_another_config(synthetic_build, tmp_path):
    run = tmp_path / "run"
    assert main(_train_args(synthetic_build, run, 3)) == 0
    config = json.loads((run / "config.json").read_text())
    config["model"]["latent_channels"] = 4
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="different model config"):
        main(_train_args(synthetic_build, run, 6, "--resume"))


def test_ship_eval_and_bench(synthetic_build, tmp_path):
    run, shipped = tmp_path / "run", tmp_path / "ae.safetensors"
    assert main(_train_args(synthetic_build, run, 3)) == 0
    assert main(["ship", "autoencoder", "--run", str(run), "--to", str(shipped), "--crops", "8"]) == 0
    model, metadata = load_autoencoder(shipped)
    assert metadata["backline_version"].endswith("+step3")
    assert metadata["latent_scale"] == pytest.approx(model.config.latent_scale)
    # The scale was measured on these very crops: the shipped latents have unit standard deviation.
    sampler = CropSampler(split_files(synthetic_build, "train"), int(0.25 * SAMPLE_RATE), sample_rate=SAMPLE_RATE)
    model.config = dataclasses.replace(model.config, latent_scale=1.0)
    assert measure_latent_std(model, sampler, crops=8, seed=0) * metadata["latent_scale"] == pytest.approx(1.0, rel=0.02)

    out = tmp_path / "report"
    assert main(["eval", "autoencoder", "--model", str(shipped), "--data", str(synthetic_build),
                 "--out", str(out), "--max-files", "1", "--max-seconds", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["split"] == "validation"  # the synthetic build has no test split
    assert set(report["categories"]) == {"bass", "drums", "mix"}
    for category in report["categories"].values():
        assert set(category["metrics"]) == {"autoencoder", "lowpass_4khz", "lowpass_8khz"}
        for metrics in category["metrics"].values():  # 2 s is too short for the Fréchet's 5 s segments: NaN
            assert "log_mel_frechet" in metrics and all(np.isfinite(v) for k, v in metrics.items() if k != "log_mel_frechet")
    assert (out / "spectrograms.png").stat().st_size > 1000
    assert "| lowpass_8khz |" in (out / "report.md").read_text()

    bench_file = tmp_path / "bench.json"
    assert main(["bench", "autoencoder", "--model", str(shipped), "--seconds", "2", "--repeats", "1",
                 "--threads", str(torch.get_num_threads()), "--out", str(bench_file)]) == 0
    bench = json.loads(bench_file.read_text())
    assert bench["duration_seconds"] == 2
    assert bench["real_time_factor"] == pytest.approx(2 / bench["total_seconds"], rel=0.01)


def test_metrics_against_known_values():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
    assert si_sdr_db(2.0 * reference, reference) > 100
    noisy = reference + 0.1 * reference.std() * rng.standard_normal(reference.shape).astype(np.float32)
    assert si_sdr_db(noisy, reference) == pytest.approx(20.0, abs=0.3)
    same = quality_metrics(reference, reference, SAMPLE_RATE)
    assert same["log_mel_l1"] == 0 and same["stft_distance"] == pytest.approx(0, abs=1e-6)
    wide = quality_metrics(low_pass(reference, SAMPLE_RATE, 8000), reference, SAMPLE_RATE)
    narrow = quality_metrics(low_pass(reference, SAMPLE_RATE, 4000), reference, SAMPLE_RATE)
    assert narrow["log_mel_l1"] > wide["log_mel_l1"] > 0


def test_registering_commands_does_not_import_torch():
    code = ("import argparse, sys; from backline.training import cli; "
            "cli.register(argparse.ArgumentParser().add_subparsers()); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
