"""A tiny random-weight bundle and a test song, shared by the engine tests (no trained weights needed)."""

import numpy as np
import torch

from backline.engine.pipeline import Bundle
from backline.engine.runtime import TorchBackend
from backline.models.autoencoder import CONFIGS as AE_CONFIGS, Autoencoder
from backline.models.diffusion import CONFIGS as DN_CONFIGS, EDMPrecond


def make_bundle(autoencoder_config: str = "tiny") -> Bundle:
    """``autoencoder_config="tiny-notes"``: with a note head (a bass's takes, the pitch-locked decode)."""
    torch.manual_seed(0)
    denoiser = EDMPrecond(DN_CONFIGS["tiny"]).eval()
    for p in denoiser.parameters():  # zero-initialised layers would hide the conditions: wake them
        if not p.data.any():
            p.data.normal_(0, 0.05)
    autoencoder = Autoencoder(AE_CONFIGS[autoencoder_config]).eval()
    return Bundle(TorchBackend(autoencoder, denoiser, {"autoencoder": autoencoder_config, "denoiser": "tiny"}))


def song(sample_rate=48000, seconds=0.7, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    mono = 0.3 * np.sin(2 * np.pi * 110 * t) * (1 + 0.5 * np.sign(np.sin(2 * np.pi * 2 * t)))
    return np.stack([mono + 0.01 * rng.standard_normal(len(t)) for _ in range(channels)]).astype(np.float32)
