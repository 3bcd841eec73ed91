"""The accompaniment denoiser: a 1-D U-Net over latent frames in the EDM framework.

Given noisy stem latents, the context (mix) latents, a style embedding and the target instrument,
it predicts the clean stem latents. Following Diff-A-Riff (Nistal et al., ISMIR 2024):

* the context latents are concatenated with the noisy latents on the channel axis, with a channel
  saying whether a context is present (dropped for classifier-free guidance);
* a conditioned denoiser (``grid_channels``, ``harmony_channels``) also gets, per latent frame, the beat
  grid and the harmony of ``models/conditioning.py``, each with a channel saying whether it is given
  (dropped at random in training, so each works without the other and has its own guidance);
* the noise level, the style embedding (or a learned "no style" vector) and the instrument are
  summed into one conditioning vector that modulates every residual block (adaptive group norm);
* the network is convolutional, so it works on any number of latent frames (inputs are padded to a
  multiple of the U-Net's total downsampling and cropped back).

``EDMPrecond`` wraps the raw network with Karras et al. (2022)'s preconditioning (Table 1), so the
exported model is the denoiser itself and nobody re-implements c_skip, c_out, c_in, c_noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from backline.models.conditioning import GRID_CHANNELS, HARMONY_CHANNELS, frame_inputs
from backline.models.style_space import STATISTICS_SPACE
from backline.models.contract import load_model, save_model

KIND = "denoiser"
INSTRUMENTS = ("bass", "drums")
DEFAULT_MODEL_PATH = Path(__file__).parent / "diffusion" / "default.safetensors"
# the shipped denoiser distilled from the default one, for the engine's few-step sampler (absent: none ships)
FEW_STEP_MODEL_PATH = Path(__file__).parent / "diffusion" / "few_step.safetensors"


@dataclass(frozen=True)
class DenoiserConfig:
    """Network size, EDM constants and training-time condition dropout; travels inside the weights."""

    name: str = "default"
    latent_channels: int = 32
    style_dim: int = 64
    channels: tuple[int, ...] = (96, 128, 192)  # 3.4 M parameters: sized to train on a 2-core CPU
    blocks_per_level: int = 2
    cond_dim: int = 192
    kernel_size: int = 3
    sigma_data: float = 1.0  # latents are scaled to unit variance by the autoencoder
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    p_mean: float = -1.2  # log-normal training noise (EDM)
    p_std: float = 1.2
    drop_context: float = 0.15
    drop_style: float = 0.3
    grid_channels: int = 0  # models.conditioning.GRID_CHANNELS for a denoiser told the beat, else 0
    harmony_channels: int = 0  # models.conditioning.HARMONY_CHANNELS for one told the chords, else 0
    drop_grid: float = 0.2
    drop_harmony: float = 0.2
    segment_frames: int = 128  # training crop, about 6 s at 21.5 latent frames/s
    style_space: str = STATISTICS_SPACE  # the style embeddings it was trained on (engine/style.py)
    latent_rate_hz: float = 44_100 / 2048
    sample_rate: int = 44_100

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def frame_inputs(self) -> tuple[tuple[str, int], ...]:
        """The per-frame conditions besides the context: (name, channels) of the beat grid and the harmony
        this denoiser takes (none for an unconditioned one)."""
        return frame_inputs(self.to_dict())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DenoiserConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown denoiser config keys: {sorted(unknown)}")
        data = dict(data)
        if "channels" in data:
            data["channels"] = tuple(data["channels"])
        return cls(**data)


CONFIGS = {
    "tiny": DenoiserConfig(name="tiny", latent_channels=8, style_dim=16, channels=(16, 32), blocks_per_level=1,
                           cond_dim=32, segment_frames=16),
    "default": DenoiserConfig(),
    "tiny-conditioned": DenoiserConfig(name="tiny-conditioned", latent_channels=8, style_dim=16, channels=(16, 32),
                                       blocks_per_level=1, cond_dim=32, segment_frames=16,
                                       grid_channels=GRID_CHANNELS, harmony_channels=HARMONY_CHANNELS),
    "conditioned": DenoiserConfig(name="conditioned", grid_channels=GRID_CHANNELS, harmony_channels=HARMONY_CHANNELS),
}


def resolve_config(name_or_path: str, **overrides) -> DenoiserConfig:
    """A named config from ``CONFIGS`` or a JSON file, with keyword overrides."""
    if name_or_path in CONFIGS:
        config = CONFIGS[name_or_path]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"{name_or_path}: neither a config name ({', '.join(CONFIGS)}) nor a JSON file")
        config = DenoiserConfig.from_dict(json.loads(path.read_text()))
    return dataclasses.replace(config, **overrides)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the conditioning vector scales and shifts the second norm."""

    def __init__(self, in_dim: int, out_dim: int, cond_dim: int, kernel_size: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, in_dim), in_dim)
        self.conv1 = nn.Conv1d(in_dim, out_dim, kernel_size, padding=kernel_size // 2)
        self.norm2 = nn.GroupNorm(min(8, out_dim), out_dim, affine=False)
        self.modulation = nn.Linear(cond_dim, 2 * out_dim)
        self.conv2 = nn.Conv1d(out_dim, out_dim, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.modulation(cond)[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return (self.skip(x) + h) / math.sqrt(2)


class UNet1d(nn.Module):
    """The raw network F(x_in, c_noise, context, style, instrument) of the EDM paper."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        c = config.latent_channels
        dims = config.channels
        self.noise_features = nn.Linear(1, config.cond_dim // 2)  # random Fourier features of c_noise
        nn.init.normal_(self.noise_features.weight, std=16.0)
        self.noise_features.weight.requires_grad_(False)
        self.noise_features.bias.requires_grad_(False)
        self.cond_mlp = nn.Sequential(nn.Linear(config.cond_dim, config.cond_dim), nn.SiLU(),
                                      nn.Linear(config.cond_dim, config.cond_dim))
        self.style_proj = nn.Linear(config.style_dim, config.cond_dim)
        self.no_style = nn.Parameter(torch.zeros(config.cond_dim))
        self.instrument = nn.Embedding(len(INSTRUMENTS), config.cond_dim)
        stem_in = 2 * c + 1 + sum(count + 1 for _, count in config.frame_inputs)  # each with its mask channel
        self.stem = nn.Conv1d(stem_in, dims[0], config.kernel_size, padding=config.kernel_size // 2)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level, dim in enumerate(dims):
            in_dim = dims[max(level - 1, 0)]
            blocks = [ResBlock(in_dim if i == 0 else dim, dim, config.cond_dim, config.kernel_size)
                      for i in range(config.blocks_per_level)]
            self.down.append(nn.ModuleList(blocks))
            if level < len(dims) - 1:
                self.downsample.append(nn.Conv1d(dim, dim, 4, stride=2, padding=1))
        self.mid = nn.ModuleList([ResBlock(dims[-1], dims[-1], config.cond_dim, config.kernel_size) for _ in range(2)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(dims))):
            dim = dims[level]
            blocks = [ResBlock((dim * 2) if i == 0 else dim, dim, config.cond_dim, config.kernel_size)
                      for i in range(config.blocks_per_level)]
            self.up.append(nn.ModuleList(blocks))
            if level > 0:
                self.upsample.append(nn.ConvTranspose1d(dim, dims[level - 1], 4, stride=2, padding=1))
        self.out_norm = nn.GroupNorm(min(8, dims[0]), dims[0])
        self.out = nn.Conv1d(dims[0], c, config.kernel_size, padding=config.kernel_size // 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def conditioning(self, c_noise: torch.Tensor, style: torch.Tensor, style_mask: torch.Tensor,
                     instrument: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * self.noise_features(c_noise[:, None])
        noise = torch.cat([angles.cos(), angles.sin()], dim=1)
        mask = style_mask[:, None]
        style_vector = mask * self.style_proj(style) + (1 - mask) * self.no_style
        return self.cond_mlp(noise + style_vector + self.instrument(instrument))

    def forward(self, x_in, c_noise, context, context_mask, style, style_mask, instrument, frame_conditions=()):
        """``frame_conditions``: (values (batch, channels, frames), mask (batch,)) per ``config.frame_inputs``."""
        cond = self.conditioning(c_noise, style, style_mask, instrument)
        inputs = [x_in]
        for values, mask in ((context, context_mask), *frame_conditions):
            inputs += [values * mask[:, None, None], mask[:, None, None].expand(-1, 1, x_in.shape[-1])]
        h = self.stem(torch.cat(inputs, dim=1))
        skips = []
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, cond)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        for block in self.mid:
            h = block(h, cond)
        for index, blocks in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, cond)
            if index < len(self.upsample):
                h = self.upsample[index](h)
        return self.out(F.silu(self.out_norm(h)))


class EDMPrecond(nn.Module):
    """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) (Karras et al. 2022, Table 1, "EDM" column).

    Inputs: ``x`` noisy latents (batch, C, frames); ``sigma`` (batch,); ``context`` (batch, C, frames)
    with ``context_mask`` (batch,) 1 = present; ``style`` (batch, style_dim) with ``style_mask``;
    ``instrument`` (batch,) index into ``INSTRUMENTS``; for a conditioned denoiser, ``grid``
    (batch, grid_channels, frames) with ``grid_mask`` (batch,) and ``harmony`` (batch, harmony_channels,
    frames) with ``harmony_mask`` (left out: not given). Any number of frames: padded and cropped here.
    """

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        self.net = UNet1d(config)

    def forward(self, x, sigma, context, context_mask, style, style_mask, instrument,
                grid=None, grid_mask=None, harmony=None, harmony_mask=None):
        given = {"grid": (grid, grid_mask), "harmony": (harmony, harmony_mask)}
        taken = dict(self.config.frame_inputs)
        for name, (values, _) in given.items():
            if values is not None and name not in taken:
                raise ValueError(f"this denoiser was not trained with a {name} input")
        sigma_data = self.config.sigma_data
        sigma = sigma.reshape(-1).to(x.dtype)
        s = sigma[:, None, None]
        c_skip = sigma_data**2 / (s**2 + sigma_data**2)
        c_out = s * sigma_data / (s**2 + sigma_data**2).sqrt()
        c_in = 1 / (s**2 + sigma_data**2).sqrt()
        c_noise = sigma.log() / 4
        frames = x.shape[-1]
        pad = (-frames) % self.config.downsampling
        x_in, context_in = F.pad(c_in * x, (0, pad)), F.pad(context, (0, pad))
        frame_conditions = []
        for name, count in self.config.frame_inputs:
            values, mask = given[name]
            if values is None:  # not given: zeros, masked out
                values, mask = x.new_zeros(x.shape[0], count, frames), x.new_zeros(x.shape[0])
            elif mask is None:
                mask = x.new_ones(x.shape[0])
            frame_conditions.append((F.pad(values.to(x.dtype), (0, pad)), mask.reshape(-1).to(x.dtype)))
        f = self.net(x_in, c_noise, context_in, context_mask.to(x.dtype), style, style_mask.to(x.dtype), instrument,
                     frame_conditions)
        return c_skip * x + c_out * f[..., :frames]

    def loss_draws(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
                   device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """The loss's random numbers for a batch of ``shape`` (batch, channels, frames): drawn for a whole
        global batch, then each process keeps its rows (training/distributed.py)."""
        batch = shape[0]
        draws = {"sigma_normal": torch.randn(batch, device=device, generator=generator),
                 "noise_normal": torch.randn(shape, device=device, generator=generator),
                 "context_uniform": torch.rand(batch, device=device, generator=generator),
                 "style_uniform": torch.rand(batch, device=device, generator=generator)}
        for name, _ in self.config.frame_inputs:
            draws[f"{name}_uniform"] = torch.rand(batch, device=device, generator=generator)
        return draws

    def dropped_conditions(self, draws: dict, grid: torch.Tensor | None = None, grid_mask: torch.Tensor | None = None,
                           harmony: torch.Tensor | None = None, harmony_mask: torch.Tensor | None = None) -> dict:
        """The training's condition dropout from ``draws``: ``context_mask`` and ``style_mask``, and a conditioned
        denoiser's ``grid`` and ``harmony`` with their masks (a row's own mask times its keep), each dropped at the
        config's rate."""
        config = self.config
        conditions = {"context_mask": (draws["context_uniform"] >= config.drop_context).float(),
                      "style_mask": (draws["style_uniform"] >= config.drop_style).float()}
        for name, values, mask, rate in (("grid", grid, grid_mask, config.drop_grid),
                                         ("harmony", harmony, harmony_mask, config.drop_harmony)):
            if values is not None and f"{name}_uniform" in draws:
                kept = (draws[f"{name}_uniform"] >= rate).float()
                conditions |= {name: values, f"{name}_mask": kept if mask is None else kept * mask}
        return conditions

    def loss(self, target: torch.Tensor, context: torch.Tensor, style: torch.Tensor, instrument: torch.Tensor,
             generator: torch.Generator | None = None, details: bool = False, draws: dict | None = None,
             grid: torch.Tensor | None = None, grid_mask: torch.Tensor | None = None,
             harmony: torch.Tensor | None = None, harmony_mask: torch.Tensor | None = None):
        """EDM training loss with log-normal sigmas and random condition dropout (for guidance); with
        ``details``, ``(loss, denoised, sigma, context_mask)`` for auxiliary losses on the same pass.
        ``draws``: the batch's random numbers (``loss_draws``), else drawn here from ``generator``.
        A conditioned denoiser's ``grid`` and ``harmony`` (with masks: 0 where a row has none) are dropped at
        the config's rates."""
        config = self.config
        if draws is None:
            draws = self.loss_draws(tuple(target.shape), generator, target.device)
        sigma = (config.p_mean + config.p_std * draws["sigma_normal"]).exp()
        noise = draws["noise_normal"] * sigma[:, None, None]
        frame_conditions = self.dropped_conditions(draws, grid, grid_mask, harmony, harmony_mask)
        context_mask, style_mask = frame_conditions.pop("context_mask"), frame_conditions.pop("style_mask")
        denoised = self(target + noise, sigma, context, context_mask, style, style_mask, instrument, **frame_conditions)
        weight = (sigma**2 + config.sigma_data**2) / (sigma * config.sigma_data) ** 2
        loss = (weight[:, None, None] * (denoised - target) ** 2).mean()
        return (loss, denoised, sigma, context_mask) if details else loss


def save_denoiser(path: str | Path, model: EDMPrecond, *, version: str, extra: dict | None = None,
                  dtype=torch.float16) -> Path:
    """Write the denoiser (weights + config, plus ``extra`` provenance such as the autoencoder's hash)."""
    config = model.config.to_dict() | {"latent_channels": model.config.latent_channels}
    if extra:
        config["provenance"] = extra
    return save_model(path, model.state_dict(), config, kind=KIND, version=version, dtype=dtype)


def load_denoiser(path: str | Path = DEFAULT_MODEL_PATH) -> tuple[EDMPrecond, dict]:
    """Load a denoiser file; returns ``(model in eval mode, float32, metadata)``."""
    state_dict, metadata = load_model(path, kind=KIND)
    config_dict = {k: v for k, v in metadata["config"].items() if k != "provenance"}
    model = EDMPrecond(DenoiserConfig.from_dict(config_dict))
    model.load_state_dict({k: v.float() for k, v in state_dict.items()})
    return model.eval(), metadata
