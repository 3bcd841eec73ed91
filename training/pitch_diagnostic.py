"""Where the autoencoder loses the bass's pitch: harmonic fit of real bass stems rebuilt several ways.

    python -m backline.training.pitch_diagnostic --data $BACKLINE_DATA/full40 [--split validation] [--count 8]
        [--latent-probe] [--vocoder-below-hz F]

For each pair (first 10 s): the real stem; the true STFT magnitude with random phase; the true
magnitude with a phase-vocoder phase (peaks tracked across frames, identity phase locking); the
autoencoder's round trip; and the round trip's magnitude with the phase-vocoder phase (with
``--vocoder-below-hz``, only below that frequency: the round trip's own phase above it). Harmonic fit
is normalised per set as in ``backline eval accompaniment`` (real 1, a stem of another piece 0). If
the true magnitude with a made-up coherent phase scores near 1 while the decoder's magnitude does not,
the decoder's magnitude, not only its phase, has lost the pitch; the round trip's magnitude with the phase
the pitch-locked decode would give it from the true notes (the real stem's transcription) shows what the
note head can reach at best. Also printed: the round trip's
``pitch_similarity`` (the measure autoencoder training validates with) and that of another piece's bass.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from backline.data.dataset import SPLITS

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


def harmonic_sum_f0(magnitude: np.ndarray, sample_rate: int, *, n_fft: int = N_FFT, lowest_midi: int = 24,
                    highest_midi: int = 72, harmonics: int = 8, decay: float = 0.85, floor_db: float = -45.0,
                    smooth_frames: int = 5) -> np.ndarray:
    """A timbre-blind pitch for a (bins, frames) magnitude: each frame's MIDI note whose first ``harmonics``
    partials (weights ``decay ** (h - 1)``) hold the most compressed magnitude (subharmonic summation), the most
    common over ``smooth_frames``; 0 Hz where the band below 500 Hz is ``floor_db`` under its loudest frame."""
    from numpy.lib.stride_tricks import sliding_window_view

    bins, frames = magnitude.shape
    bin_hz = sample_rate / n_fft
    compressed = np.log1p(1000.0 * magnitude / (magnitude.max() + 1e-12))
    f0 = 440.0 * 2.0 ** ((np.arange(lowest_midi, highest_midi + 1) - 69) / 12.0)
    score = np.zeros((len(f0), frames))
    for h in range(1, harmonics + 1):
        position = np.minimum(h * f0 / bin_hz, bins - 1.001)
        below = np.floor(position).astype(int)
        fraction = (position - below)[:, None]
        score += decay ** (h - 1) * ((1 - fraction) * compressed[below] + fraction * compressed[below + 1])
    best = np.pad(score.argmax(axis=0), smooth_frames // 2, mode="edge")
    best = np.array([np.bincount(w).argmax() for w in sliding_window_view(best, smooth_frames)])
    low = magnitude[: int(500.0 / bin_hz)].sum(axis=0)
    voiced = low > low.max() * 10 ** (floor_db / 20)
    return np.where(voiced, f0[best], 0.0)


def run(build_dir: Path, *, split: str = "validation", count: int = 8, seconds: float = 10.0, seed: int = 0,
        autoencoder_path: Path | None = None, vocoder_below_hz: float | None = None) -> dict:
    from backline.data.dataset import read_manifest
    from backline.engine.audio import read_audio
    from backline.models.dsp import istft, note_frequencies, pitch_locked, stft
    from backline.engine.transcribe import transcribe_bass
    from backline.training.notes import NoteSettings, frame_labels

    lowest, count_notes = NoteSettings.note_lowest_midi, NoteSettings.note_count

    def true_notes(audio: np.ndarray, rate: int, frames: int) -> np.ndarray:  # as one-hot note logits
        labels = frame_labels(transcribe_bass(audio, rate), frames, sample_rate=rate, hop=HOP, lowest_midi=lowest,
                              count=count_notes)
        return np.eye(count_notes + 1)[labels].T[None]
    from backline.models.autoencoder import (DEFAULT_MODEL_PATH, decode_pitch_locked, encode_audio, load_autoencoder,
                                             reconstruct)
    from backline.training import fit_metrics
    from backline.training.autoencoder import pitch_similarity

    model, metadata = load_autoencoder(autoencoder_path or DEFAULT_MODEL_PATH)  # no denoiser needed
    rng = np.random.default_rng(seed)
    pairs = []
    for record in [r for r in read_manifest(build_dir, split=split) if "bass" in r["pairs"]][:count]:
        context, rate = read_audio(build_dir / record["pairs"]["bass"]["context"])
        target, _ = read_audio(build_dir / record["pairs"]["bass"]["target"])
        frames = int(seconds * rate) // HOP * HOP
        pairs.append((context[0, :frames], target[0, :frames], rate))

    def rebuild(magnitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
        return istft((magnitude * np.cos(phase))[None], (magnitude * np.sin(phase))[None], N_FFT, HOP)[0]

    def lock(real: np.ndarray, imag: np.ndarray, f0_hz: np.ndarray, rate: int) -> np.ndarray:
        """The spectrum (1, bins, frames) with the pitch-locked decode's phase (models/dsp.py) for ``f0_hz``."""
        return istft(*pitch_locked(real, imag, f0_hz, sample_rate=rate, n_fft=N_FFT, hop=HOP), N_FFT, HOP)[0]

    scores: dict[str, list[float]] = {name: [] for name in (
        "real", "another piece's bass", "true magnitude, random phase", "true magnitude, phase-vocoder phase",
        "autoencoder round trip", "round-trip magnitude, phase-vocoder phase",
        "round-trip magnitude, phase from the true notes", "round-trip magnitude, phase from its own transcription",
        "round-trip magnitude, phase from its own harmonic-sum pitch",
        "true magnitude, phase from its harmonic-sum pitch",
        "pitch-locked round trip (the note head's notes)")}
    similarity: dict[str, list[float]] = {"autoencoder round trip": [], "another piece's bass": []}
    for index, (context, target, rate) in enumerate(pairs):
        real, imag = stft(target[None], N_FFT, HOP)
        magnitude = np.hypot(real, imag)[0]
        decoded = reconstruct(model, target, rate)[:len(target)]
        real2, imag2 = stft(decoded[None], N_FFT, HOP)
        decoded_magnitude = np.hypot(real2, imag2)[0]
        vocoded = phase_vocoder_phase(decoded_magnitude)
        if vocoder_below_hz is not None:  # the round trip's own phase above the cut-off
            above = np.fft.rfftfreq(N_FFT, 1 / rate) >= vocoder_below_hz
            vocoded[above] = np.arctan2(imag2[0], real2[0])[above]
        candidates = {
            "real": target, "another piece's bass": pairs[(index + 1) % len(pairs)][1],
            "true magnitude, random phase": rebuild(magnitude, rng.uniform(-np.pi, np.pi, magnitude.shape)),
            "true magnitude, phase-vocoder phase": rebuild(magnitude, phase_vocoder_phase(magnitude)),
            "autoencoder round trip": decoded,
            "round-trip magnitude, phase-vocoder phase": rebuild(decoded_magnitude, vocoded),
            # the pitch-locked decode (models/dsp.py) given the notes the real stem's transcription finds
            "round-trip magnitude, phase from the true notes": lock(
                real2, imag2, note_frequencies(true_notes(target, rate, real2.shape[2]), lowest), rate),
            # the same, given the notes basic-pitch reads from the round trip itself (no real stem needed)
            "round-trip magnitude, phase from its own transcription": lock(
                real2, imag2, note_frequencies(true_notes(decoded, rate, real2.shape[2]), lowest), rate),
            # a pitch any estimator reads off the decoded magnitude, against the one it reads off the real magnitude
            "round-trip magnitude, phase from its own harmonic-sum pitch": lock(
                real2, imag2, harmonic_sum_f0(decoded_magnitude, rate)[None], rate),
            "true magnitude, phase from its harmonic-sum pitch": lock(
                real, imag, harmonic_sum_f0(magnitude, rate)[None], rate),
        }
        if model.config.note_count > 0:  # what the engine's bass decode gives
            locked = decode_pitch_locked(model, encode_audio(model, target, rate))[0, :len(target)]
            candidates["pitch-locked round trip (the note head's notes)"] = locked
        for name, audio in candidates.items():
            scores[name].append(fit_metrics.harmonic_fit(audio, context, rate))
        similarity["autoencoder round trip"].append(pitch_similarity(decoded, target, rate))
        similarity["another piece's bass"].append(pitch_similarity(candidates["another piece's bass"], target, rate))
    means = {name: float(np.nanmean(values)) for name, values in scores.items() if values}
    real, other = means["real"], means["another piece's bass"]
    return {"pairs": len(pairs), "split": split, "seconds": seconds, "models": {"autoencoder": metadata.get("backline_version")},
            "vocoder_below_hz": vocoder_below_hz,
            "harmonic_fit": means,
            "normalised": {name: (value - other) / (real - other) for name, value in means.items()},
            "pitch_similarity": {name: float(np.nanmean(values)) for name, values in similarity.items()}}


def latent_probe(build_dir: Path, *, train_files: int = 60, validation_files: int = 15, seconds: float = 30.0,
                 context_frames: int = 2, ridge: float = 10.0, autoencoder_path: Path | None = None) -> dict:
    """Do the latents still know the bass's notes? A ridge-regression probe from latents to pitch class.

    For bass stems of the build (first ``seconds`` of each), the target is the stem's chroma every
    100 ms (``fit_metrics.chroma``, unit norm), the input the latent frames around that time
    (+-``context_frames``). Fitted on train stems, scored on validation stems: the mean cosine of the
    predicted and true chroma, and how often the strongest pitch class is right (chance 1/12). The
    same probe on the log spectrum below 500 Hz (8192-point STFT at 11.025 kHz), which does hold the
    notes, and the mean training chroma as a constant guess, say what the numbers mean.
    """
    from backline.engine.audio import read_audio
    from backline.models.autoencoder import DEFAULT_MODEL_PATH, encode_audio, load_autoencoder
    from backline.training import fit_metrics
    from backline.training.autoencoder import bass_files, split_files

    model, _ = load_autoencoder(autoencoder_path or DEFAULT_MODEL_PATH)
    hop = model.config.hop_length

    def features(split: str, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        latents, spectra, targets = [], [], []
        for path in bass_files(split_files(build_dir, split))[:count]:
            audio, rate = read_audio(path)
            mono = audio[0, : int(seconds * rate)]
            z = encode_audio(model, mono, rate)[0].numpy().T  # (latent frames, channels)
            target = fit_metrics.chroma(mono, rate)
            frame = np.minimum((np.arange(len(target)) * fit_metrics.CHROMA_HOP_SECONDS * rate / hop).astype(int),
                               len(z) - 1)
            stacked = np.concatenate([z[np.clip(frame + d, 0, len(z) - 1)]
                                      for d in range(-context_frames, context_frames + 1)], axis=1)
            low = fit_metrics._resample(mono, rate, fit_metrics.CHROMA_RATE)
            power = fit_metrics.stft_power(low, fit_metrics.CHROMA_FFT,
                                           int(round(fit_metrics.CHROMA_HOP_SECONDS * fit_metrics.CHROMA_RATE)))
            band = np.fft.rfftfreq(fit_metrics.CHROMA_FFT, 1 / fit_metrics.CHROMA_RATE) < 500.0
            spectrum = np.log(power[: len(target), band] + 1e-8)
            keep = target.sum(axis=1) > 0
            latents.append(stacked[keep])
            spectra.append(spectrum[keep])
            targets.append(target[keep] / np.linalg.norm(target[keep], axis=1, keepdims=True))
        return np.concatenate(latents), np.concatenate(spectra), np.concatenate(targets)

    def fit_and_score(x_train, y_train, x_val, y_val) -> dict:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
        a = np.c_[(x_train - mean) / std, np.ones(len(x_train))]
        weights = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ y_train)
        predicted = np.c_[(x_val - mean) / std, np.ones(len(x_val))] @ weights
        cosine = (predicted * y_val).sum(axis=1) / (np.linalg.norm(predicted, axis=1) + 1e-9)
        return {"chroma_cosine": float(cosine.mean()),
                "pitch_class_accuracy": float((predicted.argmax(axis=1) == y_val.argmax(axis=1)).mean())}

    z_train, s_train, y_train = features("train", train_files)
    z_val, s_val, y_val = features("validation", validation_files)
    constant = y_train.mean(axis=0)
    return {"frames": {"train": len(y_train), "validation": len(y_val)},
            "latents": fit_and_score(z_train, y_train, z_val, y_val),
            "log spectrum below 500 Hz": fit_and_score(s_train, y_train, s_val, y_val),
            "constant guess": {"chroma_cosine": float((y_val @ constant).mean() / np.linalg.norm(constant)),
                               "pitch_class_accuracy": float((y_val.argmax(axis=1) == constant.argmax()).mean())}}


def note_head_scores(build_dir: Path, *, split: str = "unseen", count: int = 40, seconds: float = 20.0,
                     autoencoder_path: Path | None = None) -> dict:
    """How well the autoencoder's note head reads real basses of ``split`` (``count`` MMA basses spread over its style
    families as ``eval accompaniment`` picks them, their first ``seconds``): ``training.notes.scores`` of its notes
    against the notes each song was written with (the MIDI made again: ``eval_suite.reference_notes``) and against
    the bass's transcription (what ``train notes`` trains on); octave errors are the pitch-class-right, note-wrong
    share of the frames with a note."""
    import torch

    from backline.data.dataset import read_manifest
    from backline.engine.audio import read_audio, to_mono
    from backline.engine.transcribe import transcribe_bass
    from backline.models.autoencoder import DEFAULT_MODEL_PATH, encode_audio, load_autoencoder
    from backline.training.eval_suite import reference_notes, spread
    from backline.training.notes import frame_labels, scores

    model, metadata = load_autoencoder(autoencoder_path or DEFAULT_MODEL_PATH)
    config = model.config
    records = [r for r in read_manifest(build_dir, split=split) if "bass" in r["pairs"] and r.get("source") == "mma"]
    logits, labels = [], {"the songs' notes": [], "the transcription": []}
    for record in spread(records, count, seed=0):
        audio, rate = read_audio(build_dir / record["pairs"]["bass"]["target"])
        mono = to_mono(audio[:, : int(seconds * rate)])[0]
        with torch.inference_mode():
            latents = encode_audio(model, mono, rate)
            logits.append(model.decode_notes(latents)[0].numpy())
        frames = logits[-1].shape[-1]
        notes = [n for n in reference_notes(record, "bass", build_dir=build_dir) if n.start_seconds < seconds]
        for name, source in (("the songs' notes", notes), ("the transcription", transcribe_bass(mono, rate))):
            labels[name].append(frame_labels(source, frames, sample_rate=rate, hop=config.stft_hop_length,
                                             lowest_midi=config.note_lowest_midi, count=config.note_count))
    out = {"split": split, "basses": len(logits), "seconds": seconds, "autoencoder": metadata.get("backline_version")}
    for name, rows in labels.items():
        result = scores(np.concatenate(logits, axis=1), np.concatenate(rows))
        result["octave_errors"] = result["pitch_class_accuracy"] - result["note_accuracy"]
        out[name] = result
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backline.training.pitch_diagnostic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="data build directory")
    parser.add_argument("--split", default="validation", choices=SPLITS)
    parser.add_argument("--count", type=int, help="bass pairs (default 8; 40 with --note-head)")
    parser.add_argument("--autoencoder", type=Path, help="autoencoder model file (default: the shipped one)")
    parser.add_argument("--vocoder-below-hz", type=float,
                        help="the phase-vocoder phase only below this frequency (default: the whole band)")
    parser.add_argument("--latent-probe", action="store_true",
                        help="also probe whether the latents still hold the bass's pitch class (see latent_probe)")
    parser.add_argument("--note-head", action="store_true",
                        help="only score the note head against the songs' notes and the transcriptions "
                             "(note_head_scores)")
    args = parser.parse_args(argv)
    if args.note_head:
        report = note_head_scores(args.data, split=args.split, count=args.count or 40,
                                  autoencoder_path=args.autoencoder)
        print(f"note head of {report['autoencoder']} on {report['basses']} basses of the {report['split']} split, "
              f"first {report['seconds']:g} s (frames with a note):")
        for name in ("the songs' notes", "the transcription"):
            r = report[name]
            print(f"  against {name:18} note accuracy {r['note_accuracy']:.3f}   pitch class {r['pitch_class_accuracy']:.3f}"
                  f"   octave errors {r['octave_errors']:.3f}   voicing {r['voicing_accuracy']:.3f}")
        return 0
    report = run(args.data, split=args.split, count=args.count or 8, autoencoder_path=args.autoencoder,
                 vocoder_below_hz=args.vocoder_below_hz)
    print(f"{report['pairs']} bass pairs of the {report['split']} split, first {report['seconds']:g} s, "
          f"models {report['models']}"
          + (f", phase vocoder below {args.vocoder_below_hz:g} Hz" if args.vocoder_below_hz else ""))
    for name, value in report["harmonic_fit"].items():
        print(f"  {name:50} harmonic fit {value:.3f}   normalised {report['normalised'][name]:.2f}")
    print("pitch similarity to the real bass (training.autoencoder.pitch_similarity; the real bass itself: 1):")
    for name, value in report["pitch_similarity"].items():
        print(f"  {name:50} {value:.3f}")
    if args.latent_probe:
        probe = latent_probe(args.data, autoencoder_path=args.autoencoder)
        print(f"pitch-class probe (ridge regression, {probe['frames']['train']} train / "
              f"{probe['frames']['validation']} validation chroma frames of bass stems; chance accuracy 0.083):")
        for name in ("latents", "log spectrum below 500 Hz", "constant guess"):
            print(f"  {name:50} chroma cosine {probe[name]['chroma_cosine']:.3f}   "
                  f"pitch-class accuracy {probe[name]['pitch_class_accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
