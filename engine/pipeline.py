"""The one path from a request to a stem: every entry point (CLI, Python API, bridge) calls ``generate``.

    validate and convert audio -> encode context -> embed style -> sigma schedule -> pure sampler over
    the guided denoiser -> decode -> back to the request's rate, channels and exact length -> level

Three lines from Python:

    from backline.engine.pipeline import GenerateRequest, generate, load_bundle
    bundle = load_bundle()
    result = generate(bundle, GenerateRequest(context=audio, sample_rate=48000, instrument="bass"))

The models run with torch for now (the onnxruntime backend is issue 8). Randomness comes only from
the request's seed; progress and cancellation go through one callback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from backline.engine.audio import AudioError, resample, to_mono, validate_audio
from backline.engine.sampling import get_sampler, get_sigmas_karras, guided
from backline.engine.style import interpolate, latent_statistics

MAX_DURATION_SECONDS = 600.0
Progress = Callable[[int, int], None]


class Cancelled(Exception):
    """Raised by a progress callback to stop a generation between diffusion steps."""


@dataclass(frozen=True)
class GenerateRequest:
    """What to generate. Audio is (channels, frames) or (frames,) at an explicit sample rate."""

    context: np.ndarray
    sample_rate: int
    instrument: str = "bass"
    style_audio: np.ndarray | None = None  # a reference recording of the sound wanted
    style_sample_rate: int | None = None
    style_audio_b: np.ndarray | None = None  # a second reference to blend with the first
    style_ratio: float = 0.0  # 0 = first reference only, 1 = second only
    seed: int = 0
    steps: int = 30
    sampler: str = "dpmpp_2m"
    cfg_context: float = 1.25
    cfg_style: float = 1.25
    max_duration_seconds: float = MAX_DURATION_SECONDS


@dataclass(frozen=True)
class GenerateResult:
    audio: np.ndarray  # (channels, frames) at sample_rate, same shape as the request's context
    sample_rate: int
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Bundle:
    """The models a generation needs, loaded once and shared by every request."""

    autoencoder: object
    denoiser: object
    versions: dict

    @property
    def sample_rate(self) -> int:
        return self.autoencoder.config.sample_rate


def default_model_paths() -> tuple[Path, Path]:
    from backline.models import autoencoder, diffusion

    return autoencoder.DEFAULT_MODEL_PATH, diffusion.DEFAULT_MODEL_PATH


def load_bundle(autoencoder_path: str | Path | None = None, denoiser_path: str | Path | None = None) -> Bundle:
    """Load the autoencoder and the denoiser (the shipped defaults unless paths are given)."""
    import torch  # noqa: F401  (the torch backend; issue 8 adds onnxruntime)

    from backline.models.autoencoder import load_autoencoder
    from backline.models.diffusion import load_denoiser

    default_ae, default_dn = default_model_paths()
    autoencoder, ae_meta = load_autoencoder(autoencoder_path or default_ae)
    denoiser, dn_meta = load_denoiser(denoiser_path or default_dn)
    if denoiser.config.latent_channels != autoencoder.config.latent_channels:
        raise ValueError(f"the denoiser expects {denoiser.config.latent_channels} latent channels, "
                         f"the autoencoder makes {autoencoder.config.latent_channels}")
    return Bundle(autoencoder, denoiser, {"autoencoder": ae_meta.get("backline_version"),
                                          "denoiser": dn_meta.get("backline_version")})


def _model_audio(bundle: Bundle, audio: np.ndarray, sample_rate: int, what: str, max_seconds: float) -> np.ndarray:
    """Validate, mix to mono and resample to the model's rate: (frames,) float32."""
    audio = validate_audio(audio, sample_rate, max_duration_seconds=max_seconds, what=what)
    return resample(to_mono(audio), sample_rate, bundle.sample_rate)[0]


def _encode(bundle: Bundle, mono: np.ndarray) -> np.ndarray:
    from backline.models.autoencoder import encode_audio

    return encode_audio(bundle.autoencoder, mono, bundle.sample_rate)[0].numpy()


def _style(bundle: Bundle, request: GenerateRequest) -> np.ndarray | None:
    if request.style_audio is None:
        if request.style_audio_b is not None:
            raise ValueError("a second style reference needs a first one")
        return None
    rate = request.style_sample_rate or request.sample_rate
    embeddings = [latent_statistics(_encode(bundle, _model_audio(bundle, audio, rate, what, request.max_duration_seconds)))
                  for audio, what in ((request.style_audio, "style reference"), (request.style_audio_b, "second style reference"))
                  if audio is not None]
    return embeddings[0] if len(embeddings) == 1 else interpolate(embeddings[0], embeddings[1], request.style_ratio)


def _check(bundle: Bundle, request: GenerateRequest) -> None:
    from backline.models.diffusion import INSTRUMENTS

    if request.instrument not in INSTRUMENTS:
        raise ValueError(f"instrument must be one of {', '.join(INSTRUMENTS)}, got {request.instrument!r}")
    if not 1 <= request.steps <= 500:
        raise ValueError(f"steps must be within 1..500, got {request.steps}")
    for name in ("cfg_context", "cfg_style"):
        value = getattr(request, name)
        if not (np.isfinite(value) and 0 <= value <= 20):
            raise ValueError(f"{name} must be within 0..20, got {value}")
    get_sampler(request.sampler)


def make_guided_denoiser(bundle: Bundle, context: np.ndarray, style: np.ndarray | None, instrument: str,
                         cfg_context: float, cfg_style: float):
    """``denoise(x, sigma)`` for one request: the guidance passes run as one batch."""
    import torch

    from backline.models.diffusion import INSTRUMENTS

    config = bundle.denoiser.config
    # pass order: none, context, full (context + style). Without a style, full == context.
    passes = ["full"] if cfg_context == 1 and (cfg_style == 1 or style is None) else (
        ["none", "context"] if style is None else ["none", "context", "full"])
    context_mask = torch.tensor([0.0 if p == "none" else 1.0 for p in passes])
    style_mask = torch.tensor([1.0 if p == "full" and style is not None else 0.0 for p in passes])
    style_vector = torch.from_numpy(style if style is not None else np.zeros(config.style_dim, np.float32))
    contexts = torch.from_numpy(context)[None].expand(len(passes), -1, -1)
    styles = style_vector[None].expand(len(passes), -1)
    instruments = torch.full((len(passes),), INSTRUMENTS.index(instrument), dtype=torch.long)

    @torch.inference_mode()
    def denoise(x: np.ndarray, sigma: float) -> np.ndarray:
        xs = torch.from_numpy(x.astype(np.float32)).expand(len(passes), -1, -1)
        out = bundle.denoiser(xs, torch.full((len(passes),), float(sigma)), contexts, context_mask, styles,
                              style_mask, instruments).numpy()
        predictions = dict(zip(passes, out[:, None]))
        if passes == ["full"]:
            return predictions["full"]
        predictions.setdefault("full", predictions["context"])
        return guided(predictions, cfg_context=cfg_context, cfg_style=cfg_style)

    return denoise


def _level(stem: np.ndarray, context: np.ndarray) -> np.ndarray:
    """Bring the stem to a level that sits with the context (half its RMS), never above -1 dBFS peak."""
    rms = float(np.sqrt(np.mean(stem**2)))
    if rms < 1e-6:
        return stem
    context_rms = float(np.sqrt(np.mean(context**2)))
    gain = (0.5 * context_rms / rms) if context_rms > 1e-6 else 1.0
    peak = float(np.abs(stem).max()) * gain
    if peak > 0.891:
        gain *= 0.891 / peak
    return (stem * gain).astype(np.float32)


def generate(bundle: Bundle, request: GenerateRequest, *, progress: Progress | None = None) -> GenerateResult:
    """Generate a stem for ``request.context``; the result has the context's rate, channels and length."""
    from backline.models.autoencoder import decode_audio

    timings = {}
    started = time.perf_counter()
    _check(bundle, request)
    context_audio = validate_audio(request.context, request.sample_rate,
                                   max_duration_seconds=request.max_duration_seconds, what="context")
    channels, frames = context_audio.shape
    mono = resample(to_mono(context_audio), request.sample_rate, bundle.sample_rate)[0]
    context_latents = _encode(bundle, mono)
    style = _style(bundle, request)
    timings["encode_seconds"] = time.perf_counter() - started

    config = bundle.denoiser.config
    sigmas = get_sigmas_karras(request.steps, config.sigma_min, config.sigma_max)
    rng = np.random.default_rng(request.seed)
    x = rng.standard_normal((1, *context_latents.shape)).astype(np.float32) * sigmas[0]
    denoise = make_guided_denoiser(bundle, context_latents, style, request.instrument,
                                   request.cfg_context, request.cfg_style)
    callback = (lambda i, total, _x, _x0: progress(i + 1, total)) if progress else None
    sample_started = time.perf_counter()
    latents = get_sampler(request.sampler)(denoise, x, sigmas, callback=callback)
    timings["sample_seconds"] = time.perf_counter() - sample_started

    import torch

    decode_started = time.perf_counter()
    stem = decode_audio(bundle.autoencoder, torch.from_numpy(latents.astype(np.float32)), len(mono))
    stem = resample(stem[None], bundle.sample_rate, request.sample_rate)[0]
    stem = np.pad(stem, (0, max(0, frames - len(stem))))[:frames]
    stem = _level(stem, to_mono(context_audio)[0])
    timings["decode_seconds"] = time.perf_counter() - decode_started
    timings["total_seconds"] = time.perf_counter() - started
    info = {"seed": request.seed, "instrument": request.instrument, "steps": request.steps,
            "sampler": request.sampler, "cfg_context": request.cfg_context, "cfg_style": request.cfg_style,
            "style": "audio" if style is not None else "none", "models": bundle.versions,
            "timings": {k: round(v, 3) for k, v in timings.items()}}
    return GenerateResult(np.repeat(stem[None], channels, axis=0), request.sample_rate, info)


def load_default_generator():
    """The bridge's compute: ``generate(params, context, sample_rate, progress, cancelled)``."""
    bundle = load_bundle()

    def run(params: dict, context: np.ndarray, sample_rate: int, progress, cancelled):
        def on_step(step: int, total: int) -> None:
            if cancelled():
                raise Cancelled()
            progress(step, total)

        allowed = {"instrument", "seed", "steps", "sampler", "cfg_context", "cfg_style"}
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(f"unknown generation parameters: {', '.join(sorted(unknown))}")
        result = generate(bundle, GenerateRequest(context=context, sample_rate=sample_rate, **params), progress=on_step)
        return result.audio, result.sample_rate, result.info

    return run


__all__ = ["AudioError", "Bundle", "Cancelled", "GenerateRequest", "GenerateResult", "generate", "load_bundle"]
