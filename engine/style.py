"""Style embeddings the denoiser is conditioned on.

Until the CLAP-like style encoder of issue 6 exists, the shipped style embedding is the simplest one
that carries timbre and level: per-channel mean and standard deviation over time of the stem's
autoencoder latents (``2 * latent_channels`` numbers). Training takes it from a random sub-segment
of the target stem, as Diff-A-Riff does with CLAP; inference takes it from a reference recording.
Interpolating two references is a weighted mean of their embeddings.
"""

from __future__ import annotations

import numpy as np


def latent_statistics(latents: np.ndarray) -> np.ndarray:
    """(channels, frames) latents -> (2 * channels,) float32: mean then std over time."""
    latents = np.asarray(latents, dtype=np.float32)
    if latents.ndim != 2 or latents.shape[1] == 0:
        raise ValueError(f"expected (channels, frames) latents with frames > 0, got shape {latents.shape}")
    return np.concatenate([latents.mean(axis=1), latents.std(axis=1)]).astype(np.float32)


def interpolate(first: np.ndarray, second: np.ndarray, ratio: float) -> np.ndarray:
    """(1 - ratio) * first + ratio * second; ratio 0 is ``first``, 1 is ``second``."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"style ratio must be within [0, 1], got {ratio}")
    return ((1.0 - ratio) * first + ratio * second).astype(np.float32)
