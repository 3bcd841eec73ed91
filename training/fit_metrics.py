"""How well a stem fits its context, how real a set of stems sounds, and whether an output is sane.

Pure numpy (no torch, no scipy), mono float audio with an explicit sample rate everywhere.

* **Harmonic fit** (0..1): the share of the stem's pitched energy (spectral peaks, 30 Hz..2 kHz,
  folded to 12 pitch classes every 100 ms) that falls in pitch classes sounding in the context at
  that time, each context pitch class weighted by its strength relative to the frame's strongest
  (context chroma smoothed over +-0.5 s).
* **Rhythmic fit** (-1..1): the mean of *onset agreement* (cosine similarity of the stem's and the
  context's onset envelopes, spectral flux at 10 ms smoothed by a 20 ms Gaussian) and *grid
  agreement* (cosine similarity of the stem's envelope with the context's eighth-note grid: tempo and
  phase from the autocorrelation of the context's envelope).
* **Normalisation per set**, as APA does: ``(candidate - shuffled) / (real - shuffled)`` where real
  is the mean over the real (context, stem) pairs and shuffled the mean over the same stems paired
  with contexts of other pieces; real pairs score 1, random pairing 0.
* **Realism**: Fréchet distance, unbiased MMD² with KID's cubic polynomial kernel, and Naeem et al.'s
  density and coverage (k = 5), on ONE fixed embedding: the mean and standard deviation over time of
  64 log-mel bands (dB, 22.05 kHz, 2048-point FFT, hop 512, 30 Hz..11 kHz) of each 5-second segment,
  128 numbers, z-scored with the reference set's statistics. Published figures use LAION-CLAP or
  VGGish embeddings; ours are not comparable with them.
* **Sanity**: non-finite, silent (RMS below -60 dBFS), clipped (more than 0.1 % of samples at full
  scale), wrong length, and copy of the context (log-mel correlation with the context above 0.9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backline.engine.harmony import (  # noqa: F401 (the harmonic part lives in the engine, which picks in-key takes)
    CHROMA_FFT, CHROMA_HOP_SECONDS, CHROMA_RATE, _resample, chroma, context_chroma_weights, harmonic_fit_from,
    stft_power,
)

ANALYSIS_RATE = 22_050
ONSET_FFT = 1024
ONSET_HOP = 220  # ~10 ms at 22.05 kHz
SMOOTH_SIGMA_FRAMES = 0.02 / (ONSET_HOP / ANALYSIS_RATE)
EMBED_SEGMENT_SECONDS = 5.0
N_MELS = 64
SILENT_RMS = 1e-3  # -60 dBFS
CLIP_LEVEL = 0.999
CLIP_SHARE = 1e-3
COPY_CORRELATION = 0.9


def harmonic_fit(stem: np.ndarray, context: np.ndarray, sample_rate: int) -> float:
    """Share (0..1) of the stem's pitched energy in the pitch classes sounding in the context; NaN if either is silent."""
    return harmonic_fit_from(chroma(stem, sample_rate), context_chroma_weights(context, sample_rate))


# ---- rhythmic fit ---------------------------------------------------------------------------------

def onset_envelope(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Spectral-flux onset strength every ONSET_HOP samples at 22.05 kHz (~10 ms), locally normalised, >= 0."""
    mono = _resample(audio, sample_rate, ANALYSIS_RATE)
    power = stft_power(mono, ONSET_FFT, ONSET_HOP)
    log = np.log1p(1e4 * power)
    flux = np.clip(np.diff(log, axis=0, prepend=log[:1]), 0, None).mean(axis=1)
    width = 20  # remove the slowly varying part (~0.4 s), keep what rises above it
    local = np.convolve(flux, np.ones(2 * width + 1) / (2 * width + 1), mode="same")
    return np.clip(flux - local, 0, None)


def _gaussian_smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    radius = int(np.ceil(3 * sigma_frames))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    return np.convolve(x, kernel / kernel.sum(), mode="same")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denominator) if denominator > 0 else float("nan")


@dataclass(frozen=True)
class Grid:
    period_seconds: float  # one beat
    phase_seconds: float  # time of the first beat

    @property
    def bpm(self) -> float:
        return 60.0 / self.period_seconds


def estimate_grid(envelope: np.ndarray, *, min_bpm: float = 70.0, max_bpm: float = 180.0) -> Grid | None:
    """Beat period and phase of an onset envelope (autocorrelation, then the best comb phase); None if flat."""
    frame = ONSET_HOP / ANALYSIS_RATE
    x = envelope - envelope.mean()
    n = len(x)
    if not np.any(x) or n < 4:
        return None
    autocorrelation = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * n)) ** 2)[:n]
    lags = np.arange(int(60 / max_bpm / frame), min(int(60 / min_bpm / frame) + 1, n - 1))
    if len(lags) == 0:
        return None
    # favour lags whose double also correlates (beats, not off-beat fragments)
    score = autocorrelation[lags] + 0.5 * autocorrelation[np.minimum(2 * lags, n - 1)]
    lag = int(lags[np.argmax(score)])
    a, b, c = autocorrelation[lag - 1:lag + 2]
    curvature = a - 2 * b + c
    period_frames = lag + (float(np.clip(0.5 * (a - c) / curvature, -0.5, 0.5)) if curvature != 0 else 0.0)

    def comb_sum(phase: int) -> float:
        return float(envelope[np.round(np.arange(phase, n, period_frames)).astype(int).clip(0, n - 1)].sum())

    best = max(range(int(np.ceil(period_frames))), key=comb_sum)
    return Grid(period_frames * frame, best * frame)


def grid_comb(grid: Grid, frames: int, *, subdivision: int = 2) -> np.ndarray:
    """An impulse train on the grid's ``1/subdivision``-beat positions, at the onset envelope's frame rate."""
    frame = ONSET_HOP / ANALYSIS_RATE
    comb = np.zeros(frames)
    step = grid.period_seconds / subdivision
    first = grid.phase_seconds - step * np.floor(grid.phase_seconds / step)
    positions = np.round(np.arange(first, frames * frame, step) / frame).astype(int)
    comb[positions[positions < frames]] = 1.0
    return comb


@dataclass(frozen=True)
class ContextFeatures:
    """What fit scores need from a context, computed once and reused for every candidate stem."""

    chroma_weights: np.ndarray
    envelope: np.ndarray  # smoothed onset envelope
    grid: Grid | None
    comb: np.ndarray | None  # smoothed eighth-note comb


def context_features(context: np.ndarray, sample_rate: int) -> ContextFeatures:
    envelope = onset_envelope(context, sample_rate)
    grid = estimate_grid(envelope)
    comb = _gaussian_smooth(grid_comb(grid, len(envelope)), SMOOTH_SIGMA_FRAMES) if grid else None
    return ContextFeatures(context_chroma_weights(context, sample_rate),
                           _gaussian_smooth(envelope, SMOOTH_SIGMA_FRAMES), grid, comb)


@dataclass(frozen=True)
class StemFeatures:
    chroma: np.ndarray
    envelope: np.ndarray  # smoothed onset envelope


def stem_features(stem: np.ndarray, sample_rate: int) -> StemFeatures:
    return StemFeatures(chroma(stem, sample_rate),
                        _gaussian_smooth(onset_envelope(stem, sample_rate), SMOOTH_SIGMA_FRAMES))


def fit_scores(stem: StemFeatures, context: ContextFeatures) -> dict:
    """harmonic_fit, onset_agreement, grid_agreement and rhythmic_fit of one (context, stem) pair."""
    onset = _cosine(stem.envelope, context.envelope)
    grid = _cosine(stem.envelope, context.comb) if context.comb is not None else float("nan")
    return {"harmonic_fit": harmonic_fit_from(stem.chroma, context.chroma_weights),
            "onset_agreement": onset, "grid_agreement": grid, "rhythmic_fit": 0.5 * (onset + grid)}


@dataclass(frozen=True)
class RhythmScores:
    onset_agreement: float
    grid_agreement: float

    @property
    def rhythmic_fit(self) -> float:
        return 0.5 * (self.onset_agreement + self.grid_agreement)


def rhythm_scores(stem: np.ndarray, context: np.ndarray, sample_rate: int) -> RhythmScores:
    """Onset agreement and eighth-note grid agreement of a stem with its context."""
    scores = fit_scores(stem_features(stem, sample_rate), context_features(context, sample_rate))
    return RhythmScores(scores["onset_agreement"], scores["grid_agreement"])


def rhythmic_fit(stem: np.ndarray, context: np.ndarray, sample_rate: int) -> float:
    """Mean of onset agreement and eighth-note grid agreement (cosines, -1..1; 0..1 in practice)."""
    return fit_scores(stem_features(stem, sample_rate), context_features(context, sample_rate))["rhythmic_fit"]


FIT_KEYS = ("harmonic_fit", "onset_agreement", "grid_agreement", "rhythmic_fit")


# ---- per-set normalisation ------------------------------------------------------------------------

def normalise(candidate, real, shuffled):
    """APA-style: 1 = as coherent as real pairs, 0 = no better than a stem from another piece (not clipped);
    NaN where real and shuffled do not differ. Numbers give a float, arrays (bootstrap draws) an array."""
    candidate, real, shuffled = (np.asarray(v, float) for v in (candidate, real, shuffled))
    spread = real - shuffled
    defined = np.isfinite(spread) & (np.abs(spread) >= 1e-9)
    score = np.where(defined, (candidate - shuffled) / np.where(defined, spread, 1.0), np.nan)
    return float(score) if score.ndim == 0 else score


def derangement(groups: list[str], rng: np.random.Generator, *, tries: int = 1000) -> np.ndarray:
    """A permutation sending every index to one of a different group (piece); raises if impossible."""
    groups = list(groups)
    n = len(groups)
    if n < 2 or len(set(groups)) < 2:
        raise ValueError("shuffled pairs need stems from at least two different pieces")
    for _ in range(tries):
        order = rng.permutation(n)
        if all(groups[i] != groups[order[i]] for i in range(n)):
            return order
    largest = max(groups.count(g) for g in set(groups))
    if largest > n // 2:
        raise ValueError("one piece holds more than half the pairs: no shuffle avoids it")
    sort = sorted(range(n), key=lambda i: groups[i])  # rotate the piece-sorted order past the largest piece
    order = np.empty(n, int)
    for k, i in enumerate(sort):
        order[i] = sort[(k + largest) % n]
    return order


# ---- realism --------------------------------------------------------------------------------------

def mel_filterbank(n_fft: int, sample_rate: int, n_mels: int = N_MELS, fmin: float = 30.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters (HTK mel scale), shape (n_mels, n_fft // 2 + 1)."""
    fmax = fmax or sample_rate / 2

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    bank = np.zeros((n_mels, len(freqs)), np.float32)
    for i in range(n_mels):
        lo, mid, hi = edges[i:i + 3]
        bank[i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return bank


_MEL_BANK = mel_filterbank(2048, ANALYSIS_RATE, N_MELS, 30.0, 11_000.0)
_MEL_CENTRES_HZ = np.fft.rfftfreq(2048, 1 / ANALYSIS_RATE)[np.argmax(_MEL_BANK, axis=1)]
BALANCE_BANDS_HZ = {"low": (0.0, 250.0), "mid": (250.0, 2000.0), "high": (2000.0, np.inf)}


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, 64) log-mel power in dB (floor -100 dB) at 22.05 kHz, 2048-point FFT, hop 512."""
    mono = _resample(audio, sample_rate, ANALYSIS_RATE)
    power = stft_power(mono, 2048, 512) @ _MEL_BANK.T
    return (10.0 * np.log10(np.maximum(power, 1e-10))).astype(np.float32)


def embed(audio: np.ndarray, sample_rate: int, *, segment_seconds: float = EMBED_SEGMENT_SECONDS) -> np.ndarray:
    """(segments, 128) embeddings: mean and std over time of 64 log-mel bands per ``segment_seconds``.

    Segments whose RMS is below -60 dBFS are skipped (silence says nothing about realism).
    """
    mono = _resample(audio, sample_rate, ANALYSIS_RATE)
    length = int(segment_seconds * ANALYSIS_RATE)
    out = []
    for start in range(0, max(len(mono) - length + 1, 1), length):
        segment = mono[start:start + length]
        if len(segment) < length // 2 or np.sqrt(np.mean(segment ** 2)) < SILENT_RMS:
            continue
        mel = log_mel(segment, ANALYSIS_RATE)
        out.append(np.concatenate([mel.mean(axis=0), mel.std(axis=0)]))
    return np.array(out, np.float64).reshape(-1, 2 * N_MELS)


def standardiser(reference: np.ndarray):
    """z-score with the reference set's per-dimension mean and std (std floored at 1e-6)."""
    mean, std = reference.mean(axis=0), np.maximum(reference.std(axis=0), 1e-6)
    return lambda x: (x - mean) / std


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """||mu_x - mu_y||² + Tr(Sx + Sy - 2 (Sx^½ Sy Sx^½)^½) between Gaussians fitted to two embedding sets."""
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root_x = _sqrtm_psd(sx)
    cross = _sqrtm_psd(root_x @ sy @ root_x)
    return float(np.sum((mu_x - mu_y) ** 2) + np.trace(sx) + np.trace(sy) - 2 * np.trace(cross))


def mmd2_polynomial(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with KID's kernel k(a, b) = (a·b / d + 1)³ (Bińkowski et al. 2018)."""
    m, n, d = len(x), len(y), x.shape[1]
    if m < 2 or n < 2:
        return float("nan")
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0))


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Naeem et al. 2020: density (can exceed 1) and coverage (0..1) with k-NN balls around real samples."""
    if len(real) <= k or len(fake) == 0:
        return float("nan"), float("nan")
    radii = np.sort(_distances(real, real), axis=1)[:, k]  # column 0 is the point itself
    cross = _distances(real, fake)  # (real, fake)
    density = float((cross < radii[:, None]).sum() / (k * len(fake)))
    coverage = float((cross.min(axis=1) < radii).mean())
    return density, coverage


def realism(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Fréchet distance, MMD², density/coverage and spectral balance of candidate embeddings against reference
    ones (NaN, and no balance, when either set has fewer than two segments)."""
    if len(reference) < 2 or len(candidate) < 2:
        return {"frechet": float("nan"), "mmd2": float("nan"), "density": float("nan"), "coverage": float("nan"),
                "reference_segments": int(len(reference)), "candidate_segments": int(len(candidate))}
    z = standardiser(reference)
    ref, cand = z(reference), z(candidate)
    density, coverage = density_coverage(ref, cand)
    return {"frechet": frechet_distance(ref, cand) if len(cand) > 1 else float("nan"),
            "mmd2": mmd2_polynomial(ref, cand), "density": density, "coverage": coverage,
            "balance_db": spectral_balance_db(reference, candidate),
            "reference_segments": int(len(ref)), "candidate_segments": int(len(cand))}


def spectral_balance_db(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """How the candidates' spectrum leans against the references', from ``embed``s' band means: per band of
    ``BALANCE_BANDS_HZ`` the mean log-mel level difference (dB) less the difference over all bands (0 everywhere:
    the same balance at any level; low -10: 10 dB less bass than the references have for their level)."""
    difference = candidate[:, :N_MELS].mean(axis=0) - reference[:, :N_MELS].mean(axis=0)
    overall = float(difference.mean())
    return {name: float(difference[(_MEL_CENTRES_HZ >= lo) & (_MEL_CENTRES_HZ < hi)].mean()) - overall
            for name, (lo, hi) in BALANCE_BANDS_HZ.items()}


# ---- sanity ---------------------------------------------------------------------------------------

def context_correlation(stem: np.ndarray, context: np.ndarray, sample_rate: int) -> float:
    """Pearson correlation of the two log-mel spectrograms (dB floored 80 dB below the louder peak)."""
    a, b = log_mel(stem, sample_rate), log_mel(context, sample_rate)
    n = min(len(a), len(b))
    floor = max(float(b.max()), float(a.max())) - 80.0
    a, b = np.maximum(a[:n], floor).ravel(), np.maximum(b[:n], floor).ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denominator) if denominator > 0 else 0.0


SANITY_KEYS = ("non_finite", "silent", "clipped", "wrong_length", "copy_of_context")


def sanity(stem: np.ndarray, context: np.ndarray | None, sample_rate: int, *,
           expected_frames: int | None = None) -> dict:
    """Flags (bools) for one output: non_finite, silent, clipped, wrong_length, copy_of_context."""
    stem = np.asarray(stem, np.float64)
    if stem.ndim == 2:
        stem = stem.mean(axis=0)
    finite = bool(np.isfinite(stem).all()) and stem.size > 0
    flags = {"non_finite": not finite, "silent": False, "clipped": False,
             "wrong_length": expected_frames is not None and stem.shape[-1] != expected_frames,
             "copy_of_context": False}
    if not finite:
        return flags
    flags["silent"] = bool(np.sqrt(np.mean(stem ** 2)) < SILENT_RMS)
    flags["clipped"] = bool(np.mean(np.abs(stem) >= CLIP_LEVEL) > CLIP_SHARE)
    if context is not None and not flags["silent"]:
        flags["copy_of_context"] = bool(context_correlation(stem, context, sample_rate) > COPY_CORRELATION)
    return flags


def sanity_shares(flags: list[dict]) -> dict:
    """Share of outputs raising each flag, and of those raising any."""
    if not flags:
        return {}
    out = {k: float(np.mean([f[k] for f in flags])) for k in SANITY_KEYS}
    out["any"] = float(np.mean([any(f.values()) for f in flags]))
    return out
