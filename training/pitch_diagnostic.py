"""Where the autoencoder loses the bass's pitch: harmonic fit of real bass stems rebuilt four ways.

    python -m backline.training.pitch_diagnostic --data $BACKLINE_DATA/full40 [--split validation] [--count 8]

For each pair (first 10 s): the real stem; the true STFT magnitude with random phase; the true
magnitude with a phase-vocoder phase (peaks tracked across frames, identity phase locking); the
autoencoder's round trip; and the round trip's magnitude with the phase-vocoder phase. Harmonic fit
is normalised per set as in ``backline eval accompaniment`` (real 1, a stem of another piece 0). If
the true magnitude with a made-up coherent phase scores near 1 while the decoder's magnitude does not,
the decoder's magnitude, not only its phase, has lost the pitch. Also printed: the round trip's
``pitch_similarity`` (the measure autoencoder training validates with) and that of another piece's bass.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

N_FFT, HOP = 2048, 512  # the shipped autoencoder's STFT


def phase_vocoder_phase(magnitude: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """A coherent phase for a (bins, frames) magnitude: each spectral peak's sinusoid advances by its
    interpolated frequency, and the bins around it are locked to it (a Hann window's pi alternation)."""
    bins, frames = magnitude.shape
    k = np.arange(bins)
    phase = np.zeros((bins, frames), np.float32)
    psi = np.zeros(bins)
    for t in range(frames):
        m = magnitude[:, t].astype(np.float64)
        if m.max() <= 0:
            phase[:, t] = psi
            continue
        peaks = np.flatnonzero((m[1:-1] > m[:-2]) & (m[1:-1] >= m[2:]) & (m[1:-1] > m.max() * 1e-4)) + 1
        if len(peaks) == 0:
            peaks = np.array([int(np.clip(np.argmax(m), 1, bins - 2))])
        a, b, c = (np.log(m[peaks + d] + 1e-12) for d in (-1, 0, 1))
        curvature = a - 2 * b + c
        safe = np.where(np.abs(curvature) > 1e-12, curvature, 1.0)
        frequency = peaks + np.where(np.abs(curvature) > 1e-12, 0.5 * (a - c) / safe, 0.0).clip(-0.5, 0.5)
        psi_peaks = psi[peaks] + 2 * np.pi * hop * frequency / n_fft
        owner = np.searchsorted((peaks[:-1] + peaks[1:]) / 2, k)
        psi = psi_peaks[owner]
        phase[:, t] = psi + np.pi * (k - frequency[owner])
    return phase


def run(build_dir: Path, *, split: str = "validation", count: int = 8, seconds: float = 10.0, seed: int = 0,
        autoencoder_path: Path | None = None) -> dict:
    from backline.data.dataset import read_manifest
    from backline.engine.audio import read_audio
    from backline.engine.pipeline import load_bundle
    from backline.engine.runtime import istft, stft
    from backline.training import fit_metrics
    from backline.training.autoencoder import pitch_similarity

    engine = load_bundle(autoencoder_path, backend="torch")
    rng = np.random.default_rng(seed)
    pairs = []
    for record in [r for r in read_manifest(build_dir, split=split) if "bass" in r["pairs"]][:count]:
        context, rate = read_audio(build_dir / record["pairs"]["bass"]["context"])
        target, _ = read_audio(build_dir / record["pairs"]["bass"]["target"])
        frames = int(seconds * rate) // HOP * HOP
        pairs.append((context[0, :frames], target[0, :frames], rate))

    def rebuild(magnitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
        return istft((magnitude * np.cos(phase))[None], (magnitude * np.sin(phase))[None], N_FFT, HOP)[0]

    scores: dict[str, list[float]] = {name: [] for name in (
        "real", "another piece's bass", "true magnitude, random phase", "true magnitude, phase-vocoder phase",
        "autoencoder round trip", "round-trip magnitude, phase-vocoder phase")}
    similarity: dict[str, list[float]] = {"autoencoder round trip": [], "another piece's bass": []}
    for index, (context, target, rate) in enumerate(pairs):
        real, imag = stft(target[None], N_FFT, HOP)
        magnitude = np.hypot(real, imag)[0]
        decoded = engine.backend.decode(engine.backend.encode(target[None]))[0, :len(target)]
        real2, imag2 = stft(decoded[None], N_FFT, HOP)
        decoded_magnitude = np.hypot(real2, imag2)[0]
        candidates = {
            "real": target, "another piece's bass": pairs[(index + 1) % len(pairs)][1],
            "true magnitude, random phase": rebuild(magnitude, rng.uniform(-np.pi, np.pi, magnitude.shape)),
            "true magnitude, phase-vocoder phase": rebuild(magnitude, phase_vocoder_phase(magnitude)),
            "autoencoder round trip": decoded,
            "round-trip magnitude, phase-vocoder phase": rebuild(decoded_magnitude, phase_vocoder_phase(decoded_magnitude)),
        }
        for name, audio in candidates.items():
            scores[name].append(fit_metrics.harmonic_fit(audio, context, rate))
        similarity["autoencoder round trip"].append(pitch_similarity(decoded, target, rate))
        similarity["another piece's bass"].append(pitch_similarity(candidates["another piece's bass"], target, rate))
    means = {name: float(np.nanmean(values)) for name, values in scores.items()}
    real, other = means["real"], means["another piece's bass"]
    return {"pairs": len(pairs), "split": split, "seconds": seconds, "models": engine.versions,
            "harmonic_fit": means,
            "normalised": {name: (value - other) / (real - other) for name, value in means.items()},
            "pitch_similarity": {name: float(np.nanmean(values)) for name, values in similarity.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backline.training.pitch_diagnostic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="data build directory")
    parser.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    parser.add_argument("--count", type=int, default=8, help="bass pairs (default 8)")
    parser.add_argument("--autoencoder", type=Path, help="autoencoder model file (default: the shipped one)")
    args = parser.parse_args(argv)
    report = run(args.data, split=args.split, count=args.count, autoencoder_path=args.autoencoder)
    print(f"{report['pairs']} bass pairs of the {report['split']} split, first {report['seconds']:g} s, "
          f"models {report['models']}")
    for name, value in report["harmonic_fit"].items():
        print(f"  {name:42} harmonic fit {value:.3f}   normalised {report['normalised'][name]:.2f}")
    print("pitch similarity to the real bass (training.autoencoder.pitch_similarity; the real bass itself: 1):")
    for name, value in report["pitch_similarity"].items():
        print(f"  {name:42} {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
