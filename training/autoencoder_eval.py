"""Measuring the autoencoder: reconstruction quality on held-out audio, and CPU speed.

Quality metrics, each computed per file on a mono excerpt and averaged per category:

* ``log_mel_l1``: mean |difference| of natural-log mel spectrograms (80 bands, 2048-point STFT,
  hop 512, magnitudes floored at 1e-5). Lower is better.
* ``stft_distance``: multi-resolution STFT distance, spectral convergence plus log-magnitude L1
  averaged over FFT sizes 256..2048 (the magnitude part of the training loss). Lower is better.
* ``si_sdr_db``: scale-invariant signal-to-distortion ratio (Le Roux et al. 2019). Higher is better;
  it rewards exact phase, which a 64x-compressed model does not keep, so expect low values.

References at a known bandwidth tell a reader what the numbers mean: the same audio low-passed to
4 kHz and 8 kHz (resampled down to 8 / 16 kHz and back up with soxr).
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from backline.data.dataset import read_manifest
from backline.engine.audio import read_audio, resample
from backline.models.autoencoder import load_autoencoder, reconstruct
from backline.training import fit_metrics
from backline.training.autoencoder import stft_distances

CATEGORIES = ("bass", "drums", "mix")
SILENCE_RMS = 10 ** (-60 / 20)
MEL_BANDS = 80
MEL_FFT = 2048
MEL_HOP = 512


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters on the HTK mel scale, shape (n_mels, n_fft // 2 + 1)."""
    def to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def to_hz(mel):
        return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)

    bin_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(0.0, to_mel(sample_rate / 2), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bin_hz) / np.maximum(upper - centre, 1e-9)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Natural-log mel spectrogram (n_mels, frames) of mono audio (frames,)."""
    spec = torch.stft(torch.from_numpy(audio), MEL_FFT, MEL_HOP, window=torch.hann_window(MEL_FFT),
                      return_complex=True).abs().numpy()
    return np.log(mel_filterbank(sample_rate, MEL_FFT, MEL_BANDS) @ spec + 1e-5)


def si_sdr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SDR in dB of ``estimate`` against ``reference`` (both zero-meaned first)."""
    estimate = estimate.astype(np.float64) - estimate.mean()
    reference = reference.astype(np.float64) - reference.mean()
    target = (estimate @ reference) / (reference @ reference + 1e-12) * reference
    noise = estimate - target
    return float(10 * np.log10((target @ target + 1e-12) / (noise @ noise + 1e-12)))


def quality_metrics(estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> dict[str, float]:
    """log_mel_l1, stft_distance and si_sdr_db of ``estimate`` against ``reference`` (same length)."""
    distances = stft_distances(torch.from_numpy(estimate)[None], torch.from_numpy(reference)[None])
    return {
        "log_mel_l1": float(np.abs(log_mel(estimate, sample_rate) - log_mel(reference, sample_rate)).mean()),
        "stft_distance": float(distances["stft_convergence"] + distances["stft_log_magnitude"]),
        "si_sdr_db": si_sdr_db(estimate, reference),
    }


def low_pass(audio: np.ndarray, sample_rate: int, cutoff_hz: int) -> np.ndarray:
    """Band-limit to ``cutoff_hz`` by resampling to 2 x cutoff and back; same length as the input."""
    down = resample(audio[None], sample_rate, 2 * cutoff_hz)
    up = resample(down, 2 * cutoff_hz, sample_rate)[0]
    out = np.zeros_like(audio)
    n = min(len(up), len(audio))
    out[:n] = up[:n]
    return out


def _category_files(build_dir: Path, split: str | None = None) -> tuple[str, dict[str, list[Path]]]:
    """The held-out files per category: ``split``, else test (validation when a build has no test split)."""
    split = split or ("test" if read_manifest(build_dir, split="test") else "validation")
    files: dict[str, list[Path]] = {c: [] for c in CATEGORIES}
    for record in read_manifest(build_dir, split=split):
        files["mix"].append(build_dir / record["mix"])
        for instrument in ("bass", "drums"):
            if instrument in record["pairs"]:
                files[instrument].append(build_dir / record["pairs"][instrument]["target"])
    return split, files


def _excerpt(audio: np.ndarray, sample_rate: int, max_seconds: float) -> np.ndarray:
    frames = int(max_seconds * sample_rate)
    if len(audio) <= frames:
        return audio
    start = (len(audio) - frames) // 2
    return audio[start : start + frames]


def evaluate(model_path: str | Path, build_dir: str | Path, out_dir: str | Path, *,
             max_files: int = 12, max_seconds: float = 30.0, split: str | None = None) -> dict:
    """Evaluate a model file on a build's held-out split; writes report.json, report.md, spectrograms.png.

    Per category, besides the per-file metrics: the log-mel Fréchet distance (``fit_metrics.realism``'s
    embedding, standardised on the real files) between the reconstructions and the real files."""
    model, metadata = load_autoencoder(model_path)
    config = model.config
    build_dir, out_dir = Path(build_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split, files = _category_files(build_dir, split)
    systems = ("autoencoder", "lowpass_4khz", "lowpass_8khz")
    categories: dict[str, dict] = {}
    examples: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    started = time.monotonic()
    for category in CATEGORIES:
        per_system: dict[str, list[dict]] = {s: [] for s in systems}
        embeddings: dict[str, list[np.ndarray]] = {}
        seconds = 0.0
        used = []
        for path in files[category]:
            if len(used) >= max_files:
                break
            audio, sample_rate = read_audio(path)
            audio = _excerpt(audio.mean(axis=0), sample_rate, max_seconds)
            if sample_rate != config.sample_rate or np.sqrt(np.mean(audio**2)) < SILENCE_RMS:
                continue
            estimates = {
                "autoencoder": reconstruct(model, audio, sample_rate),
                "lowpass_4khz": low_pass(audio, sample_rate, 4000),
                "lowpass_8khz": low_pass(audio, sample_rate, 8000),
            }
            for system, estimate in estimates.items():
                per_system[system].append(quality_metrics(estimate, audio, sample_rate))
                embeddings.setdefault(system, []).append(fit_metrics.embed(estimate, sample_rate))
            embeddings.setdefault("real", []).append(fit_metrics.embed(audio, sample_rate))
            if category not in examples:
                examples[category] = (audio, estimates["autoencoder"])
            seconds += len(audio) / sample_rate
            used.append(str(path.relative_to(build_dir)))
        if not used:
            continue
        categories[category] = {
            "files": len(used),
            "seconds": round(seconds, 1),
            "paths": used,
            "metrics": {
                system: {name: float(np.mean([m[name] for m in rows])) for name in rows[0]}
                | {"log_mel_frechet": fit_metrics.realism(np.concatenate(embeddings["real"]),
                                                          np.concatenate(embeddings[system]))["frechet"]}
                for system, rows in per_system.items()
            },
        }
    report = {
        "model": {"path": str(model_path), "version": metadata.get("backline_version"),
                  "config": metadata["config"]},
        "data": {"build_dir": str(build_dir), "split": split, "max_files": max_files, "max_seconds": max_seconds},
        "values_per_second": {
            "autoencoder_latents": config.latent_rate_hz * config.latent_channels,
            "lowpass_4khz_samples": 8000,
            "lowpass_8khz_samples": 16000,
            "waveform_samples": config.sample_rate,
        },
        "categories": categories,
        "eval_seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(_markdown(report))
    if examples:
        _spectrogram_figure(examples, config.sample_rate, out_dir / "spectrograms.png")
    return report


def _markdown(report: dict) -> str:
    rates = report["values_per_second"]
    lines = [
        "# Autoencoder reconstruction report",
        "",
        f"Model `{report['model']['path']}` (version {report['model']['version']}), "
        f"data `{report['data']['build_dir']}`, split `{report['data']['split']}`, "
        f"at most {report['data']['max_files']} files per category, "
        f"{report['data']['max_seconds']:.0f} s from the middle of each.",
        "",
        f"Numbers per second of audio: autoencoder latents {rates['autoencoder_latents']:.0f}, "
        f"4 kHz low-pass {rates['lowpass_4khz_samples']} samples, 8 kHz low-pass "
        f"{rates['lowpass_8khz_samples']} samples, waveform {rates['waveform_samples']}.",
        "",
        "log-mel L1, STFT distance and log-mel Fréchet distance (to the real files): lower is better; SI-SDR: "
        "higher is better.",
        "",
    ]
    for category, data in report["categories"].items():
        lines += [f"## {category} ({data['files']} files, {data['seconds']:.0f} s)", "",
                  "| system | log-mel L1 | MR-STFT distance | log-mel Fréchet | SI-SDR (dB) |", "|---|---:|---:|---:|---:|"]
        for system, metrics in data["metrics"].items():
            lines.append(f"| {system} | {metrics['log_mel_l1']:.3f} | {metrics['stft_distance']:.3f} | "
                         f"{metrics.get('log_mel_frechet', float('nan')):.2f} | {metrics['si_sdr_db']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def _spectrogram_figure(examples: dict[str, tuple[np.ndarray, np.ndarray]], sample_rate: int, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 2.2 * len(examples)), dpi=60)
    for row, (category, (original, reconstruction)) in enumerate(examples.items()):
        frames = min(len(original), 8 * sample_rate)
        for column, (title, audio) in enumerate((("original", original), ("reconstruction", reconstruction))):
            axis = figure.add_subplot(len(examples), 2, 2 * row + column + 1)
            image = log_mel(np.ascontiguousarray(audio[:frames]), sample_rate)
            axis.imshow(image, origin="lower", aspect="auto", vmin=-11.5, vmax=max(image.max(), -5),
                        extent=(0, frames / sample_rate, 0, MEL_BANDS))
            axis.set_title(f"{category}: {title}", fontsize=9)
            axis.set_xlabel("seconds", fontsize=8)
            axis.set_ylabel("mel band", fontsize=8)
    figure.tight_layout()
    _save_small_png(figure, path)


def _save_small_png(figure, path: Path, colors: int = 64) -> None:
    """Save a figure as a palette PNG (a few tens of KB instead of a few hundred)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(colors=colors).save(path, optimize=True)


def _test_signal(duration_seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Music-like audio for timing: a few notes plus noise (the content does not change the speed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_seconds * sample_rate)) / sample_rate
    audio = sum(0.1 * np.sin(2 * np.pi * f * t) for f in rng.uniform(40, 2000, 6))
    return (audio + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@torch.inference_mode()
def benchmark(model_path: str | Path, *, duration_seconds: float = 60.0, repeats: int = 3) -> dict:
    """Time encode and decode of ``duration_seconds`` of audio with the torch threads already set.

    Returns median timings in seconds, the real-time factor (audio seconds per compute second, for
    encode + decode) and the process's peak resident memory in MiB.
    """
    model, metadata = load_autoencoder(model_path)
    sample_rate = model.config.sample_rate
    audio = torch.from_numpy(_test_signal(duration_seconds, sample_rate))[None]
    model.decode(model.encode(audio[:, : 5 * sample_rate]))  # warm-up
    encode_times, decode_times = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        latents = model.encode(audio)
        encoded = time.perf_counter()
        model.decode(latents)
        encode_times.append(encoded - started)
        decode_times.append(time.perf_counter() - encoded)
    encode_seconds, decode_seconds = statistics.median(encode_times), statistics.median(decode_times)
    total = encode_seconds + decode_seconds
    return {
        "model": str(model_path),
        "version": metadata.get("backline_version"),
        "duration_seconds": duration_seconds,
        "encode_seconds": round(encode_seconds, 4),
        "decode_seconds": round(decode_seconds, 4),
        "total_seconds": round(total, 4),
        "real_time_factor": round(duration_seconds / total, 2),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # Other processes competing for the cores slow the figures down; record how busy it was.
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "machine": platform.machine(),
        "latent_frames": math.ceil(duration_seconds * sample_rate / model.config.hop_length),
    }
