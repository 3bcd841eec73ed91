"""Mix realism for the data engine: a seeded per-track chain of EQ, compression and reverb (pedalboard).

Each stem gets its own chain before the stems are summed, so the mix is still exactly the sum of the
stems and the target stem is the signal it is in the mix: dry, or wet when its chain has reverb (the
manifest records which).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class TrackChain:
    highpass_hz: float | None
    low_shelf_db: float
    presence_hz: float
    presence_db: float
    high_shelf_db: float
    compressor_threshold_db: float | None
    compressor_ratio: float
    reverb_wet: float | None  # None: dry
    reverb_room_size: float

    @property
    def wet(self) -> bool:
        return self.reverb_wet is not None


def draw_chain(rng: np.random.Generator, role: str) -> TrackChain:
    """A plausible chain for a track of ``role`` ("bass", "drums" or a context group)."""
    return TrackChain(
        highpass_hz=None if role == "bass" or rng.random() < 0.4 else round(float(rng.uniform(30, 120 if role != "drums" else 40)), 1),
        low_shelf_db=round(float(rng.uniform(-4, 4)), 2),
        presence_hz=round(float(rng.uniform(600, 5000)), 0),
        presence_db=round(float(rng.uniform(-5, 5)), 2),
        high_shelf_db=round(float(rng.uniform(-6, 3)), 2),
        compressor_threshold_db=round(float(rng.uniform(-30, -10)), 1) if rng.random() < 0.6 else None,
        compressor_ratio=round(float(rng.uniform(1.5, 6)), 2),
        reverb_wet=round(float(rng.uniform(0.05, 0.3)), 3) if rng.random() < (0.15 if role in ("bass", "drums") else 0.4) else None,
        reverb_room_size=round(float(rng.uniform(0.1, 0.8)), 3),
    )


def apply_chain(audio: np.ndarray, sample_rate: int, chain: TrackChain) -> np.ndarray:
    """``audio`` (mono float32) through ``chain``; same length."""
    import pedalboard

    plugins = []
    if chain.highpass_hz is not None:
        plugins.append(pedalboard.HighpassFilter(cutoff_frequency_hz=chain.highpass_hz))
    plugins += [
        pedalboard.LowShelfFilter(cutoff_frequency_hz=200.0, gain_db=chain.low_shelf_db),
        pedalboard.PeakFilter(cutoff_frequency_hz=chain.presence_hz, gain_db=chain.presence_db, q=1.0),
        pedalboard.HighShelfFilter(cutoff_frequency_hz=8000.0, gain_db=chain.high_shelf_db),
    ]
    if chain.compressor_threshold_db is not None:
        plugins.append(pedalboard.Compressor(threshold_db=chain.compressor_threshold_db, ratio=chain.compressor_ratio,
                                             attack_ms=5.0, release_ms=120.0))
    if chain.reverb_wet is not None:
        plugins.append(pedalboard.Reverb(room_size=chain.reverb_room_size, wet_level=chain.reverb_wet,
                                         dry_level=1.0 - chain.reverb_wet))
    out = pedalboard.Pedalboard(plugins)(np.asarray(audio, np.float32)[None, :], sample_rate)[0]
    return np.nan_to_num(out.astype(np.float32))


def level_to(audio: np.ndarray, rms_dbfs: float) -> np.ndarray:
    """``audio`` scaled so the RMS of its sounding part (frames within 40 dB of its peak) is ``rms_dbfs``."""
    audio = np.asarray(audio, np.float32)
    peak = float(np.abs(audio).max())
    if peak < 1e-6:
        return audio
    sounding = audio[np.abs(audio) > peak * 0.01]
    rms = float(np.sqrt(np.mean(sounding**2)))
    return audio * np.float32(10 ** (rms_dbfs / 20) / rms)


def describe(chain: TrackChain) -> dict:
    return asdict(chain)
