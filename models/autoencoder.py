"""The audio autoencoder: mono 44.1 kHz audio to compact latents and back.

Every later stage (diffusion, variations, inpainting) works in this latent space. The design is
chosen for speed on a CPU:

* **Encoder**: an STFT front-end (log magnitude plus magnitude-compressed real and imaginary parts),
  ConvNeXt blocks at the STFT frame rate, a strided convolution down to the latent rate, more
  ConvNeXt blocks, and a linear projection to ``latent_channels``. It is deterministic.
* **Decoder** (after Vocos, Siuzdak 2023, arXiv 2306.00582): ConvNeXt blocks at the latent rate, a
  transposed convolution up to the STFT frame rate, more blocks, then a linear head predicting
  log magnitude and phase, and an inverse STFT. One pass, no iterative decoding.
* ``phase="advance"`` (the ``pitch`` config, an experiment): the head predicts, per bin, the phase
  *advance* from the previous frame (its deviation from the bin's nominal advance: instantaneous
  frequency, as in GANSynth), summed over frames into the phase, and the encoder sees the measured
  advance. A steady partial is then coherent across frames by construction, which is what carries a
  bass note's pitch: at a 2048-point STFT low semitones are a fraction of a bin apart.

Length contract (``hop_length`` samples per latent frame):

    encode(audio (batch, frames))  -> latents (batch, latent_channels, ceil(frames / hop_length))
    decode(latents (batch, C, n))  -> audio (batch, n * hop_length)

``encode`` pads the audio with zeros up to a whole number of latent frames. ``reconstruct`` and
``encode_audio`` take numpy audio, validate it (rate, NaN, empty, mono) and trim the output back to
exactly the input length.

Latents come out of ``encode`` already multiplied by ``config.latent_scale`` (measured on training
data after training so they have unit variance), and ``decode`` divides by it, so callers never
rescale; the scale is in the file's metadata for information.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from backline.models.audio import AudioError, validate_audio
from backline.models.dsp import istft, note_frequencies, pitch_locked
from backline.models.contract import load_model, save_model

KIND = "autoencoder"
DEFAULT_MODEL_PATH = Path(__file__).parent / "autoencoder" / "default.safetensors"


PHASE_MODES = ("absolute", "advance")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Everything needed to build an autoencoder; travels inside the weights file.

    ``hop_length`` is samples per latent frame; it must be ``stft_hop_length`` times a whole number.
    The ``*_blocks`` / ``*_dim`` fields size the four ConvNeXt stacks; the ``train_*`` fields are
    training-time regularisers that do not change the network.
    """

    name: str = "default"
    sample_rate: int = 44_100
    hop_length: int = 2048
    n_fft: int = 2048
    stft_hop_length: int = 512
    latent_channels: int = 32
    encoder_frame_dim: int = 160
    encoder_frame_blocks: int = 2
    encoder_latent_dim: int = 256
    encoder_latent_blocks: int = 2
    decoder_latent_dim: int = 256
    decoder_latent_blocks: int = 4
    decoder_frame_dim: int = 192
    decoder_frame_blocks: int = 3
    mlp_ratio: float = 3.0
    kernel_size: int = 7
    latent_scale: float = 1.0
    # Which latent space the encoder makes: the version of the model whose encoder this is (set when
    # shipped; a decoder-only fine-tune keeps its init's). Empty: the model's own version
    # (engine.runtime.latent_space_of).
    latent_space: str = ""
    # "absolute": the decoder predicts each STFT frame's phase; "advance": it predicts each bin's phase
    # advance from the previous frame and sums them (and the encoder sees the measured advance).
    phase: str = "absolute"
    train_latent_noise_std: float = 0.02
    train_latent_penalty: float = 1e-4
    train_frequency_weight: float = 0.0  # the instantaneous-frequency loss (training/autoencoder.py)
    train_frequency_loudness: float = 0.3  # its bins weighted by the target's magnitude to this power
    train_stft_resolutions: tuple[int, ...] = (256, 512, 1024, 2048)  # n_fft of the spectral losses
    # > 0: a small head predicts the input's pitch classes from the latents in training (unused at
    # inference), so the latents must keep the notes, which reconstruction losses alone let them drop
    train_pitch_weight: float = 0.0
    # > 0: a note head reads the bass's notes from the latents (MIDI ``note_lowest_midi`` and up, one
    # class per semitone plus "no note", per STFT frame), trained with the autoencoder frozen
    # (training/notes.py); decoding a bass stem then gives its low band a phase that follows the notes
    # (models/dsp.py). It does not change the latent space.
    note_count: int = 0
    note_lowest_midi: int = 24
    note_dim: int = 192
    note_blocks: int = 3

    def __post_init__(self) -> None:
        if self.phase not in PHASE_MODES:
            raise ValueError(f"phase must be one of {', '.join(PHASE_MODES)}, got {self.phase!r}")
        object.__setattr__(self, "train_stft_resolutions", tuple(int(n) for n in self.train_stft_resolutions))
        if self.hop_length % self.stft_hop_length:
            raise ValueError(
                f"hop_length {self.hop_length} must be a multiple of stft_hop_length {self.stft_hop_length}"
            )
        if self.n_fft < self.stft_hop_length or (self.n_fft - self.stft_hop_length) % 2:
            raise ValueError("n_fft must be >= stft_hop_length and differ from it by an even number")

    @property
    def frames_per_latent(self) -> int:
        """STFT frames per latent frame."""
        return self.hop_length // self.stft_hop_length

    @property
    def latent_rate_hz(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def compression_ratio(self) -> float:
        """Waveform samples per latent value (mono): hop_length / latent_channels."""
        return self.hop_length / self.latent_channels

    def to_dict(self) -> dict:
        """The config as a JSON-able dict, with the derived latent rate added for readers."""
        data = dataclasses.asdict(self)
        data["train_stft_resolutions"] = list(self.train_stft_resolutions)
        data["latent_rate_hz"] = self.latent_rate_hz
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "AutoencoderConfig":
        """Build a config from a dict; derived keys (latent_rate_hz) are ignored, unknown keys refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names - {"latent_rate_hz"}
        if unknown:
            raise ValueError(f"unknown autoencoder config keys: {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in names})


CONFIGS: dict[str, AutoencoderConfig] = {
    # Debug size: trains in seconds on a CPU; used by the tests. Not within the latent-rate target.
    "tiny": AutoencoderConfig(
        name="tiny",
        hop_length=256,
        n_fft=256,
        stft_hop_length=64,
        latent_channels=8,
        encoder_frame_dim=32,
        encoder_frame_blocks=1,
        encoder_latent_dim=32,
        encoder_latent_blocks=1,
        decoder_latent_dim=32,
        decoder_latent_blocks=1,
        decoder_frame_dim=32,
        decoder_frame_blocks=1,
        mlp_ratio=2.0,
    ),
    # 21.5 latent frames/s x 32 channels: 64x fewer numbers than the waveform.
    "default": AutoencoderConfig(),
}
# The same sizes with the phase built from predicted advances, and the losses that resolve bass pitch
# (an experiment: see models/autoencoder/MODEL_CARD.md and CHANGELOG.md, issue 3).
_PITCH = dict(phase="advance", train_frequency_weight=5.0, train_stft_resolutions=(256, 512, 1024, 2048, 4096, 8192),
              train_pitch_weight=1.0)
CONFIGS["tiny-advance"] = dataclasses.replace(CONFIGS["tiny"], name="tiny-advance", **_PITCH)
CONFIGS["pitch"] = dataclasses.replace(CONFIGS["default"], name="pitch", **_PITCH)
# With a note head (the pitch-locked bass decode); the shipped one is added by `backline train notes`.
CONFIGS["tiny-notes"] = dataclasses.replace(CONFIGS["tiny"], name="tiny-notes", note_count=12, note_dim=16, note_blocks=1)


def resolve_config(name_or_path: str) -> AutoencoderConfig:
    """A config from the registry by name, or from a JSON file."""
    if name_or_path in CONFIGS:
        return CONFIGS[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return AutoencoderConfig.from_dict(json.loads(path.read_text()))
    raise ValueError(f"unknown autoencoder config {name_or_path!r}: expected one of {sorted(CONFIGS)} or a .json file")


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block (Liu et al. 2022) as used by Vocos: depthwise conv, LayerNorm, MLP, layer scale."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int, layer_scale: float):
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.up = nn.Linear(dim, hidden_dim)
        self.down = nn.Linear(hidden_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, dim, time)
        y = self.depthwise(x).transpose(1, 2)
        y = self.down(F.gelu(self.up(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of (batch, channels, time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def _stack(dim: int, blocks: int, config: AutoencoderConfig) -> nn.Sequential:
    hidden = int(dim * config.mlp_ratio)
    scale = 1.0 / max(blocks, 1)
    return nn.Sequential(*[ConvNeXtBlock(dim, hidden, config.kernel_size, scale) for _ in range(blocks)])


class Autoencoder(nn.Module):
    """Encoder and decoder; see the module docstring for the length contract."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        c = config
        bins = c.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(c.n_fft), persistent=False)
        # Each bin's nominal phase advance per STFT hop, 2 pi k hop / n_fft, taken modulo 2 pi exactly.
        nominal = 2 * math.pi * ((torch.arange(bins) * c.stft_hop_length) % c.n_fft) / c.n_fft
        self.register_buffer("nominal_cos", torch.cos(nominal)[None, :, None], persistent=False)
        self.register_buffer("nominal_sin", torch.sin(nominal)[None, :, None], persistent=False)
        # Encoder.
        self.enc_in = nn.Conv1d((5 if c.phase == "advance" else 3) * bins, c.encoder_frame_dim, 1)
        self.enc_frame = _stack(c.encoder_frame_dim, c.encoder_frame_blocks, c)
        self.enc_frame_norm = ChannelNorm(c.encoder_frame_dim)
        self.enc_down = nn.Conv1d(
            c.encoder_frame_dim, c.encoder_latent_dim, c.frames_per_latent, stride=c.frames_per_latent
        )
        self.enc_latent = _stack(c.encoder_latent_dim, c.encoder_latent_blocks, c)
        self.enc_out = nn.Sequential(ChannelNorm(c.encoder_latent_dim), nn.Conv1d(c.encoder_latent_dim, c.latent_channels, 1))
        # Decoder.
        self.dec_in = nn.Conv1d(c.latent_channels, c.decoder_latent_dim, c.kernel_size, padding=c.kernel_size // 2)
        self.dec_latent = _stack(c.decoder_latent_dim, c.decoder_latent_blocks, c)
        self.dec_latent_norm = ChannelNorm(c.decoder_latent_dim)
        self.dec_up = nn.ConvTranspose1d(
            c.decoder_latent_dim, c.decoder_frame_dim, c.frames_per_latent, stride=c.frames_per_latent
        )
        self.dec_frame = _stack(c.decoder_frame_dim, c.decoder_frame_blocks, c)
        self.dec_frame_norm = ChannelNorm(c.decoder_frame_dim)
        self.dec_head = nn.Conv1d(c.decoder_frame_dim, 2 * bins, 1)
        if c.train_pitch_weight > 0:  # training aid (see the config); 12 pitch classes per latent frame
            self.pitch_head = nn.Conv1d(c.latent_channels, 12, 3, padding=1)
        if c.note_count > 0:
            self.note_head = nn.Sequential(
                nn.Conv1d(c.latent_channels, c.note_dim, c.kernel_size, padding=c.kernel_size // 2),
                _stack(c.note_dim, c.note_blocks, c), ChannelNorm(c.note_dim),
                nn.Conv1d(c.note_dim, c.frames_per_latent * (c.note_count + 1), 1),
            )

    # -- the spectral features and the spectral head, on real and imaginary parts (the ONNX graphs' I/O) --
    def encode_spectrum(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        """Unscaled latents from an STFT given as real and imaginary parts (batch, bins, frames).

        Features per bin and frame: log magnitude; the spectrum compressed to magnitude^0.3 with its
        phase kept; with ``phase="advance"`` also the phase advance since the previous frame relative
        to the bin's nominal advance, as a unit vector scaled by magnitude^0.3.
        """
        magnitude = torch.sqrt(real * real + imag * imag)
        factor = (magnitude + 1e-7).pow(-0.7)
        features = [torch.log(magnitude + 1e-5), real * factor, imag * factor]
        if self.config.phase == "advance":
            # S_t * conj(S_{t-1}) * exp(-i nominal): its angle is the deviation of the phase advance.
            prev_real, prev_imag = F.pad(real[..., :-1], (1, 0)), F.pad(imag[..., :-1], (1, 0))
            adv_real = real * prev_real + imag * prev_imag
            adv_imag = imag * prev_real - real * prev_imag
            dev_real = adv_real * self.nominal_cos + adv_imag * self.nominal_sin
            dev_imag = adv_imag * self.nominal_cos - adv_real * self.nominal_sin
            dev_scale = magnitude.pow(0.3) / (torch.sqrt(dev_real * dev_real + dev_imag * dev_imag) + 1e-7)
            features += [dev_real * dev_scale, dev_imag * dev_scale]
        features = torch.cat(features, dim=1)
        x = self.enc_frame_norm(self.enc_frame(self.enc_in(features)))
        x = self.enc_latent(self.enc_down(x))
        return self.enc_out(x)

    def decode_head(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled latents (batch, C, n) -> log magnitude and phase (``phase="absolute"``) or phase-advance
        deviation (``"advance"``), each (batch, bins, n * frames_per_latent)."""
        if latents.dim() != 3 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"decode expects latents shaped (batch, {self.config.latent_channels}, n), got {tuple(latents.shape)}"
            )
        x = self.dec_latent_norm(self.dec_latent(self.dec_in(latents)))
        x = self.dec_frame_norm(self.dec_frame(self.dec_up(x)))
        log_magnitude, deviation = self.dec_head(x).chunk(2, dim=1)
        return log_magnitude, deviation

    def head_to_spectrum(self, log_magnitude: torch.Tensor, deviation: torch.Tensor, *,
                         phase_gradient: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """STFT real and imaginary parts from the head's output.

        With ``phase="absolute"`` the head's second half is the phase. With ``"advance"``, the phase
        of bin k at frame t is the sum over frames up to t of its nominal advance
        (2 pi k stft_hop / n_fft, an exact integer product modulo n_fft) plus the predicted deviation
        (radians, unbounded: the phase is periodic, so nothing saturates). The sum runs in float64
        and is wrapped before the cast: over a 5-minute region (26k frames) a float32 running sum
        would drift by milliradians and differ between torch and onnxruntime.

        ``phase_gradient=False`` (training only; the values are the same) keeps a loss from reaching
        the deviations: a loss on the absolute phase (waveform L1, complex spectra) cannot be met by
        a running sum started at an arbitrary phase, and its gradients, summed over every later
        frame, drown the frequency signal. With it the phase is learnt from its derivative only.
        """
        c = self.config
        magnitude = torch.exp(log_magnitude.clamp(max=7.0))
        if c.phase == "absolute":
            return magnitude * torch.cos(deviation), magnitude * torch.sin(deviation)
        bins, frames = log_magnitude.shape[1], log_magnitude.shape[2]
        cycles = (torch.arange(bins, device=deviation.device)[:, None]
                  * torch.arange(frames, device=deviation.device)[None, :] * c.stft_hop_length) % c.n_fft
        if not phase_gradient:
            deviation = deviation.detach()
        phase = (2 * math.pi / c.n_fft) * cycles.double() + torch.cumsum(deviation.double(), dim=2)
        phase = (phase - (2 * math.pi) * torch.floor(phase / (2 * math.pi))).to(deviation.dtype)
        return magnitude * torch.cos(phase), magnitude * torch.sin(phase)

    def decode_spectrum(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled latents (batch, C, n) -> STFT real and imaginary parts (batch, bins, n * frames_per_latent)."""
        return self.head_to_spectrum(*self.decode_head(latents))

    def decode_notes(self, latents: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (batch, C, n) -> note logits (batch, note_count + 1, n * frames_per_latent):
        class 0 is "no note", class i the MIDI note ``note_lowest_midi + i - 1``, per STFT frame."""
        c = self.config
        if c.note_count <= 0:
            raise ValueError("this autoencoder has no note head (config note_count is 0)")
        batch, _, n = latents.shape
        logits = self.note_head(latents).reshape(batch, c.frames_per_latent, c.note_count + 1, n)
        return logits.permute(0, 2, 3, 1).reshape(batch, c.note_count + 1, n * c.frames_per_latent)

    # -- STFT with "same" padding: frames = samples / stft_hop_length exactly -----------------------
    def _stft(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> complex (batch, bins, samples / stft_hop_length)."""
        c = self.config
        pad = (c.n_fft - c.stft_hop_length) // 2
        audio = F.pad(audio, (pad, pad))
        frames = audio.unfold(-1, c.n_fft, c.stft_hop_length) * self.window  # (batch, frames, n_fft)
        return torch.fft.rfft(frames, dim=-1).transpose(1, 2)

    def _istft(self, spec: torch.Tensor) -> torch.Tensor:
        """complex (batch, bins, frames) -> (batch, frames * stft_hop_length); Vocos' "same" iSTFT."""
        c = self.config
        frames = spec.shape[-1]
        pad = (c.n_fft - c.stft_hop_length) // 2
        out_size = (frames - 1) * c.stft_hop_length + c.n_fft
        segments = torch.fft.irfft(spec, n=c.n_fft, dim=1) * self.window[None, :, None]
        audio = F.fold(segments, (1, out_size), (1, c.n_fft), stride=(1, c.stft_hop_length))[:, 0, 0]
        envelope = F.fold(
            (self.window**2)[None, :, None].expand(1, -1, frames),
            (1, out_size), (1, c.n_fft), stride=(1, c.stft_hop_length),
        )[0, 0, 0]
        audio = audio[:, pad:out_size - pad]
        return audio / envelope[pad:out_size - pad].clamp_min(1e-8)

    def _pad_to_hop(self, audio: torch.Tensor) -> torch.Tensor:
        remainder = audio.shape[-1] % self.config.hop_length
        return F.pad(audio, (0, self.config.hop_length - remainder)) if remainder else audio

    # -- public API on tensors -----------------------------------------------------------------------
    def encode_raw(self, audio: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (what the network computes, before ``latent_scale``)."""
        if audio.dim() != 2:
            raise ValueError(f"encode expects audio shaped (batch, frames), got {tuple(audio.shape)}")
        spec = self._stft(self._pad_to_hop(audio))
        return self.encode_spectrum(spec.real.contiguous(), spec.imag.contiguous())

    def decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """Audio from unscaled latents: (batch, C, n) -> (batch, n * hop_length)."""
        real, imag = self.decode_spectrum(latents)
        return self._istft(torch.complex(real, imag))

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, frames) at ``sample_rate`` -> latents (batch, C, ceil(frames / hop_length)), unit-variance scaled."""
        return self.encode_raw(audio) * self.config.latent_scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (batch, C, n) -> audio (batch, n * hop_length)."""
        return self.decode_raw(latents / self.config.latent_scale)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Round trip, trimmed to the input length."""
        return self.decode(self.encode(audio))[..., : audio.shape[-1]]


# -- numpy entry points: validation, exact lengths ------------------------------------------------------
def check_audio(model: Autoencoder, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Validate mono audio for ``model``; returns float32 ``(frames,)`` or raises ``AudioError``."""
    audio = validate_audio(audio, sample_rate, what="autoencoder input")
    expected = model.config.sample_rate
    if sample_rate != expected:
        raise AudioError(
            f"autoencoder input: the model takes {expected} Hz audio, got {sample_rate} Hz; "
            "resample it first (backline.engine.audio.resample)"
        )
    if audio.shape[0] != 1:
        raise AudioError(
            f"autoencoder input: the model takes mono audio, got {audio.shape[0]} channels; "
            "mix down first (backline.engine.audio.to_mono)"
        )
    return audio[0]


@torch.inference_mode()
def encode_audio(model: Autoencoder, audio: np.ndarray, sample_rate: int) -> torch.Tensor:
    """Mono audio ``(frames,)`` or ``(1, frames)`` -> latents (1, C, ceil(frames / hop_length))."""
    samples = torch.from_numpy(check_audio(model, audio, sample_rate))[None]
    return model.encode(samples)


@torch.inference_mode()
def decode_audio(model: Autoencoder, latents: torch.Tensor, num_frames: int | None = None) -> np.ndarray:
    """Latents (1, C, n) -> float32 audio ``(frames,)``, trimmed to ``num_frames`` when given."""
    audio = model.decode(latents)[0]
    if num_frames is not None:
        if num_frames > audio.shape[-1]:
            raise ValueError(f"{num_frames} frames asked for, the latents decode to {audio.shape[-1]}")
        audio = audio[:num_frames]
    return audio.numpy().astype(np.float32, copy=False)


@torch.inference_mode()
def decode_pitch_locked(model: Autoencoder, latents: torch.Tensor) -> np.ndarray:
    """Scaled latents (batch, C, n) of a bass -> audio (batch, n * hop_length) whose low band's phase follows
    the notes the note head reads (``models.dsp``); what the engine's bass decode is on torch."""
    c = model.config
    unscaled = latents / c.latent_scale
    real, imag = (part.numpy() for part in model.decode_spectrum(unscaled))
    f0_hz = note_frequencies(model.decode_notes(unscaled).numpy(), c.note_lowest_midi)
    real, imag = pitch_locked(real, imag, f0_hz, sample_rate=c.sample_rate, n_fft=c.n_fft, hop=c.stft_hop_length)
    return istft(real, imag, c.n_fft, c.stft_hop_length)


def reconstruct(model: Autoencoder, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Encode then decode; returns float32 ``(frames,)`` of exactly the input length."""
    samples = check_audio(model, audio, sample_rate)
    return decode_audio(model, encode_audio(model, samples, sample_rate), samples.shape[-1])


# -- weights through the model contract --------------------------------------------------------------
def save_autoencoder(path: str | Path, model: Autoencoder, *, version: str, dtype=torch.float16) -> Path:
    """Write ``model`` (weights + config) as a Backline model file; fp16 by default."""
    return save_model(path, model.state_dict(), model.config.to_dict(), kind=KIND, version=version, dtype=dtype)


def load_autoencoder(path: str | Path = DEFAULT_MODEL_PATH) -> tuple[Autoencoder, dict]:
    """Load a model file; returns ``(model in eval mode with float32 weights, metadata)``."""
    state_dict, metadata = load_model(path, kind=KIND)
    model = Autoencoder(AutoencoderConfig.from_dict(metadata["config"]))
    model.load_state_dict({k: v.float() for k, v in state_dict.items()})
    return model.eval(), metadata


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def latent_frames(num_frames: int, hop_length: int) -> int:
    """Latent frames for ``num_frames`` samples: ceil(num_frames / hop_length)."""
    return math.ceil(num_frames / hop_length)
