"""The style networks in torch: the audio tower (latents -> a CLAP-style embedding) and the prompt prior
(a text embedding -> the denoiser's style space). ``engine.style`` runs the same maths in NumPy from the
weights; ``training.style_prior`` trains them; ``export.onnx`` exports them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from backline.models.style_space import TOWER_CONTEXT_FRAMES


class AudioTower(nn.Module):
    """The audio tower in torch (training); ``engine.style.tower_forward`` is the same in NumPy."""

    def __init__(self, latent_channels: int, dim: int = 64, hidden: int = 192):
        super().__init__()
        self.frame = nn.ModuleList([nn.Linear(latent_channels * TOWER_CONTEXT_FRAMES, hidden), nn.Linear(hidden, hidden)])
        self.head = nn.ModuleList([nn.Linear(2 * hidden, hidden), nn.Linear(hidden, dim)])

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, channels, frames) -> (n, dim) of norm sqrt(dim)."""
        padded = torch.cat([latents[..., :1], latents, latents[..., -1:]], dim=-1)
        frames = latents.shape[-1]
        h = torch.cat([padded[..., i:i + frames] for i in range(TOWER_CONTEXT_FRAMES)], dim=-2).transpose(-1, -2)
        for layer in self.frame:
            h = nn.functional.gelu(layer(h), approximate="tanh")
        h = torch.cat([h.mean(dim=-2), h.std(dim=-2, unbiased=False)], dim=-1)
        out = self.head[1](nn.functional.gelu(self.head[0](h), approximate="tanh"))
        return nn.functional.normalize(out, dim=-1) * out.shape[-1] ** 0.5


def tower_from_weights(weights: dict[str, np.ndarray]) -> AudioTower:
    """The torch audio tower of a style file's ``tower.*`` weights (sizes read from their shapes)."""
    state = {k[len("tower."):]: torch.from_numpy(np.asarray(v, np.float32)) for k, v in weights.items()
             if k.startswith("tower.")}
    tower = AudioTower(state["frame.0.weight"].shape[1] // TOWER_CONTEXT_FRAMES, state["head.1.weight"].shape[0],
                       state["frame.0.weight"].shape[0])
    tower.load_state_dict(state)
    return tower.eval()


class Prior(nn.Module):
    def __init__(self, text_dim: int, style_dim: int, hidden: int = 256):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(text_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, style_dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.nn.functional.gelu(x, approximate="tanh")
        return x
