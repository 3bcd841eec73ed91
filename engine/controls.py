"""The producer's controls, as pure functions over latents, masks and denoisers (Diff-A-Riff, sec. 4).

Each control wraps the guided ``denoise(x, sigma)`` or shapes the sampler's start, so every sampler
and every model gets them unchanged:

- **inpainting** (regenerate a range): the denoiser's estimate is replaced by the known latents
  where they are kept. Started from ``known + sigma_max * noise``, every solver then keeps
  ``x = known + sigma * noise`` there exactly (the noised original at each step) while the range
  in between is generated to fit both sides; the audio outside the range is the input's own samples.
- **variations**: the input's latents noised to the sigma reached after ``(1 - strength)`` of the
  schedule, then denoised over the rest: 0 is the input, 1 a fresh generation.
- **loops**: the estimate is averaged over the repeats of a period (and the start noise tiled) for
  the first ``strength`` fraction of the steps, then released so the repeats may differ slightly.
- **pseudo-stereo**: mid = the stem, side = ``width / 2`` times its difference to a low-strength
  variation; the mono sum is the stem exactly and width 0 gives two identical channels.
- **tempo**: bar positions to seconds, for a host that knows its tempo and the region's position.

Interpolating two style embeddings is ``engine.style.interpolate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backline.engine.sampling import Denoise


# -- tempo -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tempo:
    """A host's tempo and where the region starts, so bar positions become seconds in the region.

    Bars and beats count from 1, as in a DAW's position display: bar 1 beat 1 is the song's start.
    ``region_start_beats`` is the region's first sample in beats from the song's start (the host's
    ``ppqPosition``); without it, bar 1 is the region's start.
    """

    bpm: float
    beats_per_bar: int = 4
    region_start_beats: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.bpm) and 20.0 <= self.bpm <= 400.0):
            raise ValueError(f"tempo must be within 20..400 BPM, got {self.bpm}")
        if not 1 <= self.beats_per_bar <= 32:
            raise ValueError(f"beats per bar must be within 1..32, got {self.beats_per_bar}")
        if not (np.isfinite(self.region_start_beats) and self.region_start_beats >= 0):
            raise ValueError(f"region start must be a beat position >= 0, got {self.region_start_beats}")

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self.bpm

    def bars_seconds(self, bars: float) -> float:
        """A length of ``bars`` bars in seconds."""
        return bars * self.beats_per_bar * self.seconds_per_beat

    def position_seconds(self, position: str) -> float:
        """``"5"`` (bar 5) or ``"5.3"`` (bar 5, beat 3) to seconds after the region's start."""
        bar_text, _, beat_text = str(position).strip().partition(".")
        try:
            bar, beat = int(bar_text), float(beat_text or 1)
        except ValueError:
            raise ValueError(f"a bar position looks like 5 or 5.3 (bar.beat), got {position!r}") from None
        if bar < 1 or not 1 <= beat < self.beats_per_bar + 1:
            raise ValueError(f"bar position {position!r} is outside the bar grid (bars and beats count from 1)")
        beats = (bar - 1) * self.beats_per_bar + (beat - 1) - self.region_start_beats
        if beats < 0:
            raise ValueError(f"bar position {position!r} is before the region's start")
        return beats * self.seconds_per_beat


# -- inpainting --------------------------------------------------------------------------------------------
CROSSFADE_FRAMES = 2  # latent frames over which a regenerated range fades in from the kept audio


def keep_mask(num_points: int, rate_hz: float, start_seconds: float, end_seconds: float,
              crossfade_seconds: float) -> np.ndarray:
    """(num_points,) float32 at ``rate_hz`` (latent frames or samples): 1 where the input is kept, 0 in
    the regenerated range [start, end).

    The mask ramps from 1 to 0 over ``crossfade_seconds`` *inside* the range at each edge the range
    does not share with the ends, so nothing outside the range is touched. The same call at the
    latent rate and at the sample rate gives masks that line up.
    """
    if not (np.isfinite(start_seconds) and np.isfinite(end_seconds) and 0 <= start_seconds < end_seconds):
        raise ValueError(f"the range to regenerate must have 0 <= start < end, got {start_seconds}..{end_seconds} s")
    duration_seconds = num_points / rate_hz
    if start_seconds >= duration_seconds:
        raise ValueError(f"the range to regenerate starts at {start_seconds:.2f} s, after the end ({duration_seconds:.2f} s)")
    start = int(np.floor(start_seconds * rate_hz))
    end = min(num_points, int(np.ceil(end_seconds * rate_hz)))
    mask = np.ones(num_points, np.float32)
    mask[start:end] = 0.0
    ramp = min(int(round(crossfade_seconds * rate_hz)), (end - start) // 2)
    falling = np.linspace(1, 0, ramp + 2, dtype=np.float32)[1:-1]
    if start > 0:
        mask[start:start + ramp] = falling
    if end < num_points:
        mask[end - ramp:end] = falling[::-1]
    return mask


def inpainting(denoise: Denoise, known: np.ndarray, keep: np.ndarray) -> Denoise:
    """``denoise`` whose estimate is ``known`` where ``keep`` is 1 (broadcast over the last axis)."""
    known = known.astype(np.float32)
    keep = keep.astype(np.float32)

    def inpaint(x: np.ndarray, sigma: float) -> np.ndarray:
        return keep * known + (1.0 - keep) * denoise(x, sigma)

    return inpaint


# -- variations --------------------------------------------------------------------------------------------
def variation_start(latents: np.ndarray, strength: float, sigmas: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The start and the remaining schedule of a variation of ``latents`` at ``strength`` in [0, 1].

    Runs the last ``round(strength * steps)`` steps of ``sigmas`` from ``latents`` noised to their
    first sigma. Strength 0 returns ``latents`` with the schedule ``[0]`` (no step to take).
    """
    if not (np.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise ValueError(f"variation strength must be within [0, 1], got {strength}")
    steps = len(sigmas) - 1
    taken = int(round(strength * steps))
    tail = sigmas[steps - taken:]
    noise = rng.standard_normal(latents.shape).astype(np.float32)
    return (latents + noise * tail[0]).astype(np.float32), tail


# -- loops -------------------------------------------------------------------------------------------------
def tie(x: np.ndarray, period_frames: int) -> np.ndarray:
    """Average ``x`` over the repeats of ``period_frames`` along its last axis and tile it back.

    A last partial repeat joins the average of the positions it covers, so the result is exactly
    periodic over the whole length.
    """
    frames = x.shape[-1]
    if not 1 <= period_frames <= frames:
        raise ValueError(f"loop period must be 1..{frames} latent frames, got {period_frames}")
    index = np.arange(frames) % period_frames
    sums = np.zeros((*x.shape[:-1], period_frames), np.float64)
    np.add.at(sums, (..., index), x)
    counts = np.bincount(index, minlength=period_frames)
    return (sums / counts)[..., index].astype(x.dtype)


def looping(denoise: Denoise, period_frames: int, release_sigma: float) -> Denoise:
    """``denoise`` whose estimate is tied to the period while ``sigma > release_sigma``."""

    def loop(x: np.ndarray, sigma: float) -> np.ndarray:
        estimate = denoise(x, sigma)
        return tie(estimate, period_frames) if sigma > release_sigma else estimate

    return loop


def release_sigma(sigmas: np.ndarray, strength: float) -> float:
    """The sigma below which loop tying stops: after ``strength`` of the steps (1 never releases)."""
    if not (np.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise ValueError(f"loop strength must be within [0, 1], got {strength}")
    steps = len(sigmas) - 1
    return float(sigmas[int(round(strength * steps))]) if strength > 0 else float("inf")


def loop_period_frames(loop_seconds: float, frame_rate_hz: float, num_frames: int) -> int:
    """A loop length in whole latent frames (at least 1, at most the whole stem)."""
    if not (np.isfinite(loop_seconds) and loop_seconds > 0):
        raise ValueError(f"loop length must be positive, got {loop_seconds} s")
    period = max(1, int(round(loop_seconds * frame_rate_hz)))
    if period > num_frames:
        raise ValueError(f"loop length {loop_seconds:.2f} s is longer than the region ({num_frames / frame_rate_hz:.2f} s)")
    return period


def loop_cycle(audio: np.ndarray, period_samples: int) -> np.ndarray:
    """One period of a looped stem, taken after the first so both its ends have neighbours.

    Played back to back it repeats without a click: its end runs into the next period's start.
    """
    frames = audio.shape[-1]
    start = period_samples if frames >= 2 * period_samples else 0
    if start + period_samples > frames:
        raise ValueError("the stem is shorter than one loop period")
    return np.ascontiguousarray(audio[..., start:start + period_samples])


# -- pseudo-stereo -----------------------------------------------------------------------------------------
STEREO_VARIATION_STRENGTH = 0.3  # how far the right channel's variation strays from the stem


def pseudo_stereo(stem: np.ndarray, variation: np.ndarray, width: float) -> np.ndarray:
    """(2, n) from a mono stem and a variation of it: mid = stem, side = width / 2 * (variation - stem)."""
    if not (np.isfinite(width) and 0.0 <= width <= 1.0):
        raise ValueError(f"stereo width must be within [0, 1], got {width}")
    side = 0.5 * width * (variation - stem)
    return np.stack([stem + side, stem - side]).astype(np.float32)
