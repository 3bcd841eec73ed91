"""A TEST/DEMO generator for the bridge. It is NOT the model and makes no music of its own.

It exists so the server, the protocol and the plugin can be exercised end to end before (and
without) the real engine pipeline: it runs ``steps`` steps of a plain DSP transform of the context,
a low-passed octave-down copy (an analog-octaver style flip-flop sub-octave), calling ``progress``
after each step and stopping when ``cancelled()`` says so. Its output is deterministic, so tests can
compare what the bridge delivers against calling it directly.

Parameters it reads (all optional): ``steps`` (1..1000, default 8), ``demo_step_seconds`` (a pause
per step, 0..5 s, to make jobs last long enough to watch), ``demo_fail`` (raise, to test failures).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def _moving_average(signal: np.ndarray, window_frames: int) -> np.ndarray:
    """Trailing moving average via a running sum (a cheap low-pass); same length as ``signal``."""
    padded = np.concatenate([np.zeros(window_frames), signal])
    running = np.cumsum(padded)
    return (running[window_frames:] - running[:-window_frames]) / window_frames


def demo_generate(
    params: dict,
    context: np.ndarray,
    sample_rate: int,
    progress: Callable[[int, int], None],
    cancelled: Callable[[], bool],
) -> tuple[np.ndarray, int, dict]:
    """Return ``(audio (1, frames) float32, sample_rate, info)``: a low-passed octave-down copy of the context."""
    steps = params.get("steps", 8)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
        raise ValueError(f"steps must be a whole number from 1 to 1000, got {steps!r}")
    step_seconds = float(params.get("demo_step_seconds", 0.0))
    if not 0.0 <= step_seconds <= 5.0:
        raise ValueError(f"demo_step_seconds must be within 0..5, got {step_seconds!r}")
    if params.get("demo_fail"):
        raise RuntimeError("the demo generator was asked to fail (demo_fail)")

    mono = context.astype(np.float64).mean(axis=0)
    frames = mono.shape[0]
    upward = np.concatenate([[False], (mono[:-1] < 0) & (mono[1:] >= 0)])
    # Flip-flop: the square wave changes sign on every other upward zero crossing -> one octave down.
    square = np.where((np.cumsum(upward) // 2) % 2 == 0, 1.0, -1.0)
    envelope = _moving_average(np.abs(mono), max(1, sample_rate // 50))
    sub_octave = square * envelope
    window_frames = max(1, sample_rate // 400)  # ~2.5 ms box filter
    running = np.cumsum(np.concatenate([np.zeros(window_frames), sub_octave]))

    out = np.zeros(frames, dtype=np.float64)
    bounds = np.linspace(0, frames, steps + 1).astype(int)
    for step in range(steps):
        if cancelled():
            break
        start, end = bounds[step], bounds[step + 1]
        out[start:end] = (running[start + window_frames:end + window_frames] - running[start:end]) / window_frames
        if step_seconds:
            time.sleep(step_seconds)
        progress(step + 1, steps)
    audio = (0.5 * out).astype(np.float32)[None, :]
    return audio, sample_rate, {"generator": "demo (not a model): low-passed octave-down copy", "steps": steps,
                                "params": {k: f"<audio {v.shape}>" if isinstance(v, np.ndarray) else v
                                           for k, v in params.items()}}  # echoed, so tests see what arrived


# The demo's style pads (the welcome lists them): fixed points so a plugin's pad can be tried without a model.
demo_generate.style_pads = {
    instrument: [{"name": f"demo {instrument} {name}", "x": x, "y": y}
                 for name, x, y in (("dark", -0.6, -0.4), ("bright", 0.6, -0.4), ("busy", 0.0, 0.6))]
    for instrument in ("bass", "drums")
}
