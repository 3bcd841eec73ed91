"""A tiny random-weight bundle and a test song, shared by the engine tests (no trained weights needed)."""

import numpy as np
import torch

from backline.engine.pipeline import Bundle
from backline.engine.runtime import TorchBackend
from backline.engine.style import PAD_SOUNDS, StylePad
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


def pad(style_dim=16, sounds=5, seed=0) -> StylePad:
    """A style pad of ``sounds`` random embeddings."""
    rng = np.random.default_rng(seed)
    return StylePad.of(tuple(f"sound {i}" for i in range(sounds)), rng.standard_normal((sounds, style_dim)))


class Pads:
    """A stand-in prompt encoder whose pads come from fixed embeddings (the tiny model's style size)."""

    def __init__(self, style_dim):
        self.pads = {instrument: pad(style_dim, len(names), seed=i)
                     for i, (instrument, names) in enumerate(PAD_SOUNDS.items())}

    def pad(self, instrument):
        return self.pads[instrument]

    def __call__(self, prompt):
        return np.zeros(len(self.pads["bass"].embeddings[0]), np.float32)
