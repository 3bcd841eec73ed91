"""The one path from a request to a stem: every entry point (CLI, Python API, bridge) calls ``generate``.

    validate and convert audio -> encode context -> embed style -> sigma schedule -> pure sampler over
    the guided denoiser (a bass: several takes, the one most in key with the context kept) -> decode ->
    back to the request's rate, channels and exact length -> level

From Python (README.md runs the same example under test):

    audio, sample_rate = read_audio("examples/ultima_context.flac")
    bundle = load_bundle()
    result = generate(bundle, GenerateRequest(context=audio, sample_rate=sample_rate, instrument="bass"))

The models run behind a runtime backend (``engine/runtime.py``): onnxruntime on exported graphs (no
torch needed) or torch on the safetensors files; both give the same result for the same seed within
float32 tolerance. Randomness comes only from the request's seed; progress and cancellation go
through one callback.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from backline.engine import controls
from backline.engine.audio import AudioError, resample, to_mono, validate_audio
from backline.engine.harmony import context_chroma_weights, context_harmony, in_key_share
from backline.engine.params import check_param, check_params, default
from backline.engine.runtime import (DEFAULT_GUIDANCE, FEW_STEP, FRAME_GUIDANCE, ONNX_FILES, STYLE_ENCODER_FILE,
                                     Backend, FewStep, ModelContract, OnnxBackend, TorchBackend, default_onnx_dir,
                                     guidance_for, onnx_audio_style)
from backline.engine.sampling import GUIDANCE_RESCALE, get_sampler, get_sigmas_karras, guided
from backline.engine.tempo import estimate_beats
from backline.engine.style import (DEFAULT_PRIOR_PATH, PAD_SOUNDS, PromptEncoder, audio_style, interpolate,
                                   latent_statistics, match_latent_statistics)
from backline.models.conditioning import beat_grid, chord_frames, parse_chords, tracked_grid
from backline.models.style_space import STATISTICS_SPACE

MAX_DURATION_SECONDS = 600.0
MAX_CACHED_REFERENCES = 32
# A stem steered by a reference has its latents' per-channel mean and std matched to the reference's, and keeps the
# level they decode to (the reference's) instead of being levelled to the context: it follows the reference more
# in all three measures of `backline eval style` (training/reports/style).
DEFAULT_STYLE_MATCH = 1.0
MATCHED_LEVEL_WINDOW_DB = 12.0  # a matched stem keeps the reference's level within this much of the context-levelled one
SILENT_CONTEXT_RMS = 1e-4  # -80 dBFS: a region this quiet is generated from nothing, not "over silence"
# A fresh stem that decodes below -100 dBFS over a sounding region is a failed take (the style evaluation
# met one drum stem by reference at -145 dBFS): up to this many more seeds are sampled in its place.
SILENT_STEM_RMS = 1e-5
SILENT_STEM_RETRIES = 2
# Takes sampled as one batch hold this many latent frames at most (four takes of two minutes); longer regions
# sample fewer takes at a time, so a five-minute region peaks no higher than one take at a time would.
TAKE_BATCH_FRAMES = 4 * 2584
Progress = Callable[[int, int], None]


class Cancelled(Exception):
    """Raised by a progress callback to stop a generation between diffusion steps."""


@dataclass(frozen=True)
class GenerateRequest:
    """What to generate. Audio is (channels, frames) or (frames,) at an explicit sample rate."""

    context: np.ndarray
    sample_rate: int
    instrument: str = default("instrument")  # defaults: engine/params.py, one for every entry point
    style_audio: np.ndarray | None = None  # a reference recording of the sound wanted
    style_sample_rate: int | None = None
    style_audio_b: np.ndarray | None = None  # a second reference to blend with the first
    style_prompt: str | None = None  # a text description; blended with ``style_audio`` when both are given
    style_pad: tuple[float, float] | None = None  # a point on the instrument's style pad, in a prompt's stead
    style_ratio: float = default("style_ratio")  # 0 = the reference only, 1 = the second reference (or the prompt) only
    seed: int = default("seed")
    steps: int | None = None  # None: the denoiser file's default (DEFAULT_SAMPLING where it names none)
    sampler: str | None = None
    cfg_context: float | None = None  # None: the denoiser file's default (its card says how it was chosen)
    cfg_style: float | None = None
    max_duration_seconds: float = MAX_DURATION_SECONDS
    # the producer's controls (engine/controls.py); ranges and loops in seconds, see ``request_from_params``
    stem: np.ndarray | None = None  # an existing stem at sample_rate, as long as the context: to regenerate or vary
    regenerate_seconds: tuple[float, float] | None = None  # regenerate [start, end) of ``stem``, keep the rest
    variation_strength: float | None = None  # 0 returns ``stem``, 1 is a fresh generation
    loop_seconds: float | None = None  # the stem repeats with this period (snapped to whole latent frames)
    loop_strength: float = default("loop_strength")  # fraction of the steps the repeats are tied for; 1 = exact repeats
    stereo_width: float = default("stereo_width")  # 0 = the context's channel layout; > 0 = pseudo-stereo of this width
    # bass: sample this many takes and keep the one whose notes (the autoencoder's note head) sit most in the
    # context's pitch classes (engine/harmony.py); None: the denoiser file's default where the autoencoder reads notes
    candidates: int | None = None
    # a fresh stem steered by references (a denoiser on latent statistics): its latents' per-channel mean and std moved
    # this far to the reference's (0 off, 1 exactly) before decoding, and its level as far from the context's towards
    # the reference's (in dB); None: DEFAULT_STYLE_MATCH. A prompt's share of a blend scales it down; prompts alone: never
    style_match: float | None = None
    # the song's timing (bars, loops, and the beat grid of a denoiser told the beat; else a beat tracker's) and the
    # chords to follow (a denoiser told the chords; else the harmony heard in the context), engine/params.py
    tempo: controls.Tempo | None = None
    chords: str | None = None
    cfg_tempo: float | None = None  # None: the denoiser file's default, as cfg_context
    cfg_chords: float | None = None


@dataclass(frozen=True)
class GenerateResult:
    audio: np.ndarray  # (channels, frames) at sample_rate, same shape as the request's context
    sample_rate: int
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Bundle:
    """The models a generation needs, loaded once and shared by every request, behind one runtime backend."""

    backend: Backend
    prompts: PromptEncoder | None = None  # text prompt -> style embedding; loads its models on first use
    references: dict = field(default_factory=dict, compare=False)  # reference embeddings by content hash
    audio_style: Callable[[np.ndarray], np.ndarray] = latent_statistics  # latents -> the denoiser's style space

    def reference_embedding(self, audio: np.ndarray, sample_rate: int, what: str, max_seconds: float) -> np.ndarray:
        """The style embedding of a reference recording, computed once per content (and rate)."""
        audio = validate_audio(audio, sample_rate, max_duration_seconds=max_seconds, what=what)
        key = hashlib.sha256(audio.tobytes() + str(sample_rate).encode()).hexdigest()
        if key not in self.references:
            if len(self.references) >= MAX_CACHED_REFERENCES:
                self.references.pop(next(iter(self.references)))  # the oldest
            mono = resample(to_mono(audio), sample_rate, self.sample_rate)[0]
            self.references[key] = self.audio_style(_encode(self, mono))
        return self.references[key]

    @property
    def contract(self) -> ModelContract:
        return self.backend.contract

    @property
    def sample_rate(self) -> int:
        return self.backend.contract.sample_rate

    @property
    def versions(self) -> dict:
        return self.backend.contract.versions

    @property
    def runtime(self) -> str:
        """Where the models run: ``onnxruntime CUDAExecutionProvider`` (the provider in use) or ``torch cpu``."""
        providers = getattr(self.backend, "providers", None)
        if providers:
            return f"onnxruntime {providers[0]}"
        return f"torch {next(self.backend.denoiser.parameters()).device.type}"


def default_model_paths() -> tuple[Path, Path]:
    from backline.models import autoencoder, diffusion

    return autoencoder.DEFAULT_MODEL_PATH, diffusion.DEFAULT_MODEL_PATH


def default_few_step_path() -> Path | None:
    """The shipped distilled denoiser, when there is one."""
    from backline.models import diffusion

    return diffusion.FEW_STEP_MODEL_PATH if diffusion.FEW_STEP_MODEL_PATH.is_file() else None


BACKENDS = ("auto", "onnx", "torch")


def load_bundle(autoencoder_path: str | Path | None = None, denoiser_path: str | Path | None = None, *,
                backend: str = "auto", onnx_dir: str | Path | None = None, providers: list[str] | None = None,
                intra_op_threads: int | None = None, step_graph: bool = True, precision: str = "fp32",
                prompt_prior_path: str | Path | None = None, prompt_cache_dir: Path | None = None,
                few_step_path: str | Path | None = None) -> Bundle:
    """Load the autoencoder and the denoiser once, behind a runtime backend.

    ``backend="onnx"`` runs the graphs in ``onnx_dir`` (default ``runtime.default_onnx_dir()``) with
    onnxruntime, on ``providers`` (default CUDA when available, else CPU) and ``intra_op_threads``;
    it needs no torch; ``step_graph`` (default) samples one ``guided_step.onnx`` run per evaluation,
    False one ``denoiser.onnx`` call with the guidance and the update in numpy; ``precision="int8"`` runs the
    denoiser's int8 graphs (``backline export --int8``; CPU only), and its few-step graphs when they are there.
    ``backend="torch"`` loads the safetensors files (the shipped defaults unless paths are given), and
    ``few_step_path``, a denoiser distilled from it (the shipped one beside the shipped denoiser). ``"auto"`` takes
    onnx when ``onnx_dir`` is given, or when no safetensors path is given and the default ONNX files exist; torch
    otherwise.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        shipped_onnx = all((default_onnx_dir() / name).is_file() for name in ONNX_FILES.values())
        use_onnx = onnx_dir is not None or (shipped_onnx and not (autoencoder_path or denoiser_path))
        backend = "onnx" if use_onnx else "torch"
    if precision != "fp32" and backend == "torch":
        raise ValueError(f"precision {precision} runs exported graphs: it needs the onnx backend (with --onnx-dir "
                         "where model files are given), not torch")
    if backend == "onnx":
        if few_step_path is not None:
            raise ValueError("the onnx backend reads its few-step graphs from its folder (backline export --few-step); "
                             "a few-step file goes with the torch backend")
        runtime = OnnxBackend(onnx_dir, providers=providers, intra_op_threads=intra_op_threads, step_graph=step_graph,
                              precision=precision)
    else:
        default_ae, default_dn = default_model_paths()
        if few_step_path is None and denoiser_path is None:
            few_step_path = default_few_step_path()
        runtime = TorchBackend.from_files(autoencoder_path or default_ae, denoiser_path or default_dn, few_step_path)
    style_path = prompt_prior_path or DEFAULT_PRIOR_PATH
    space = runtime.contract.style_space
    style_graph = runtime.onnx_dir / STYLE_ENCODER_FILE if backend == "onnx" else None
    if space != STATISTICS_SPACE and style_graph is not None and style_graph.is_file():
        references = onnx_audio_style(style_graph, space, providers=providers, intra_op_threads=intra_op_threads)
    else:
        references = audio_style(space, style_path)
    prompts = PromptEncoder(style_path, cache_dir=prompt_cache_dir, style_space=space,
                            latent_space=runtime.contract.latent_space)
    return Bundle(runtime, prompts, audio_style=references)


def _encode(bundle: Bundle, mono: np.ndarray) -> np.ndarray:
    """Mono model-rate audio (frames,) -> latents (C, ceil(frames / hop_length))."""
    return bundle.backend.encode(mono[None])[0]


def _decode(bundle: Bundle, latents: np.ndarray, num_frames: int, instrument: str | None = None) -> np.ndarray:
    """Latents (1, C, n) of an ``instrument`` stem -> mono audio (num_frames,) at the model's rate."""
    audio = bundle.backend.decode(latents.astype(np.float32), instrument)[0]
    if num_frames > audio.shape[-1]:
        raise ValueError(f"{num_frames} frames asked for, the latents decode to {audio.shape[-1]}")
    return np.ascontiguousarray(audio[:num_frames], dtype=np.float32)


def _style(bundle: Bundle, request: GenerateRequest) -> np.ndarray | None:
    """The style embedding: a reference, a prompt, a blend of two of them (``style_ratio``), or none."""
    if request.style_audio is None and request.style_audio_b is not None:
        raise ValueError("a second style reference needs a first one")
    if request.style_prompt is not None and request.style_pad is not None:
        raise ValueError("give the style in words or as a point on the style pad, not both")
    if request.style_audio_b is not None and (request.style_prompt is not None or request.style_pad is not None):
        raise ValueError("blend a reference with a second reference or with a prompt, not both")
    rate = request.style_sample_rate or request.sample_rate
    embeddings = [bundle.reference_embedding(audio, rate, what, request.max_duration_seconds)
                  for audio, what in ((request.style_audio, "style reference"), (request.style_audio_b, "second style reference"))
                  if audio is not None]
    if request.style_prompt is not None:
        if bundle.prompts is None:
            raise ValueError("this engine has no prompt encoder; use a reference recording")
        prompt = bundle.prompts(request.style_prompt)
        if prompt.shape != (bundle.contract.style_dim,):
            raise ValueError(f"the prompt encoder gives {prompt.shape[-1]} numbers, the denoiser wants {bundle.contract.style_dim}")
        embeddings.append(prompt)
    if request.style_pad is not None:
        if bundle.prompts is None:
            raise ValueError("this engine has no prompt prior, so no style pad; use a reference recording")
        embeddings.append(bundle.prompts.pad(request.instrument).embedding(request.style_pad))
    if not embeddings:
        return None
    return embeddings[0] if len(embeddings) == 1 else interpolate(embeddings[0], embeddings[1], request.style_ratio)


def _style_kind(request: GenerateRequest) -> str:
    kinds = [k for k, v in (("audio", request.style_audio), ("audio", request.style_audio_b),
                            ("prompt", request.style_prompt), ("pad", request.style_pad)) if v is not None]
    return "+".join(kinds) or "none"


def _style_match(bundle: Bundle, request: GenerateRequest, style: np.ndarray | None) -> float:
    """How far a fresh stem's latent statistics are moved to its style's: where the style is latent statistics (the
    denoiser's space) and comes from references, scaled by the references' share of a blend with a prompt (a
    prompt's embedding is a family's average, not a sound: matching it made the bass less in key)."""
    if style is None or request.style_audio is None or request.stem is not None or (
            bundle.contract.style_space != STATISTICS_SPACE):
        return 0.0
    strength = DEFAULT_STYLE_MATCH if request.style_match is None else float(request.style_match)
    words = request.style_prompt is not None or request.style_pad is not None  # a family's average, not a sound
    return strength * (1.0 - request.style_ratio) if words else strength


def _takes(bundle: Bundle, request: GenerateRequest, silent_context: bool) -> int:
    """How many takes to sample: ``request.candidates``, by default the denoiser file's (``sampling_of``) for a bass
    over a sounding context when the autoencoder reads notes (one where nothing can be in key or out of it)."""
    if request.candidates is not None:
        return request.candidates
    can_choose = request.instrument == "bass" and bundle.contract.note_lowest_midi is not None
    return bundle.contract.sampling["candidates"] if can_choose and not silent_context else 1


def chord_chart(chords: str, tempo: controls.Tempo | None) -> list[tuple[float, str]]:
    """The producer's chords as (start beat, symbol), read at the song's meter: bars need the tempo."""
    if tempo is None:
        raise ValueError("chords in bars need the tempo (tempo_bpm)")
    return parse_chords(chords, tempo.beats_per_bar)


def _check(bundle: Bundle, request: GenerateRequest) -> None:
    for name in ("instrument", "seed", "candidates", "steps", "sampler", "cfg_context", "cfg_style", "style_ratio",
                 "style_prompt", "style_pad", "style_match", "regenerate_seconds", "variation_strength", "loop_seconds",
                 "loop_strength", "stereo_width", "chords", "cfg_tempo", "cfg_chords"):
        check_param(name, getattr(request, name))  # the one schema every entry point shares (engine/params.py)
    if request.chords is not None:
        if "harmony" not in dict(bundle.contract.frame_inputs):
            raise ValueError("this model reads the harmony from the context and takes no chords; leave the chords "
                             "out, or load a denoiser told the chords")
        chord_chart(request.chords, request.tempo)
    instruments = bundle.contract.instruments
    if request.instrument not in instruments:
        raise ValueError(f"instrument must be one of {', '.join(instruments)}, got {request.instrument!r}")
    if request.sampler == FEW_STEP:
        if bundle.contract.few_step is None:
            raise ValueError("these models have no few-step sampler (a denoiser distilled from this one, shipped "
                             "beside it); choose euler, heun or dpmpp_2m")
        given = guidance_asked(request)
        if given:
            raise ValueError(f"the few-step sampler has the model's guidance built in; leave {', '.join(given)} out, "
                             "or choose the full sampler (dpmpp_2m) to set guidance")
    elif request.sampler is not None:
        get_sampler(request.sampler)
    if (request.regenerate_seconds is not None or request.variation_strength is not None) and request.stem is None:
        raise ValueError("regenerating a range or making a variation needs the stem to work on")
    if request.regenerate_seconds is not None and request.variation_strength is not None:
        raise ValueError("choose either a range to regenerate or a variation, not both")
    if request.candidates is not None:
        if request.candidates > 1 and request.instrument != "bass":
            raise ValueError("candidates pick the bass take most in key with the context; drums have no key")
        if request.candidates > 1 and bundle.contract.note_lowest_midi is None:
            raise ValueError("candidates need an autoencoder with a note head (backline train notes) to tell "
                             "which take is in key; this one has none")


@dataclass(frozen=True)
class GuidancePasses:
    """The guidance passes of one request, batched on axis 0, and the scales that combine them."""

    passes: tuple[str, ...]  # in order, a subset of none, context, full (context + style), then without_<condition>
    context_mask: np.ndarray  # (passes,) 1 = the context is given to that pass
    style_mask: np.ndarray  # (passes,)
    style: np.ndarray  # (style_dim,), zeros without a style
    instrument: int  # index into the contract's instruments
    cfg_context: float
    cfg_style: float
    frame: dict = field(default_factory=dict)  # a conditioned denoiser's given grid / harmony, (channels, frames)
    frame_scales: dict = field(default_factory=dict)  # their guidance scales, by name
    frame_taken: tuple = ()  # (name, channels) the denoiser takes: the contract's frame_inputs

    def frame_inputs(self, frames: int) -> dict[str, np.ndarray]:
        """The backend's ``grid``, ``grid_mask``, ``harmony``, ``harmony_mask`` over ``frames`` latent frames (none
        for an unconditioned denoiser): values (1, channels, frames), masks per pass: given to every pass but
        ``none`` and the one that goes without it."""
        inputs = {}
        for name, channels in self.frame_taken:
            values = self.frame.get(name)
            given = [values is not None and p not in ("none", f"without_{name}") for p in self.passes]
            block = values if values is not None else np.zeros((channels, frames), np.float32)
            inputs[name] = block[None].astype(np.float32)
            inputs[f"{name}_mask"] = np.array(given, np.float32)
        return inputs

    def frame_step_inputs(self) -> dict[str, np.ndarray]:
        """The step graph's ``frame_guidance`` and ``frame_pass_index`` (runtime.STEP_INPUTS' notes)."""
        if not self.frame_taken:
            return {}
        names = [name for name, _ in self.frame_taken]
        return {"frame_guidance": np.array([self.frame_scales.get(n, 1.0) for n in names], np.float32),
                "frame_pass_index": np.array([self.passes.index(f"without_{n}") if f"without_{n}" in self.passes
                                              else 0 for n in names], np.int64)}

    @property
    def pass_index(self) -> np.ndarray:
        """(3,) int64: the rows of none, context and full; a pass not run points at the one that stands in
        for it (full is context without a style; with one pass every row is it), as ``guided`` reads them."""
        full = self.passes.index("full") if "full" in self.passes else self.passes.index("context")
        context = self.passes.index("context") if "context" in self.passes else full
        none = self.passes.index("none") if "none" in self.passes else context
        return np.array([none, context, full], np.int64)

    @property
    def rescale(self) -> float:
        return 0.0 if self.passes == ("full",) else GUIDANCE_RESCALE  # one pass is the prediction as it is


def guidance_passes(contract: ModelContract, style: np.ndarray | None, instrument: str, cfg_context: float,
                    cfg_style: float, *, use_context: bool = True, frame: dict | None = None,
                    frame_scales: dict | None = None) -> GuidancePasses:
    """Which passes a request needs: a scale of 1 needs no pass for its condition's absence.

    ``use_context=False`` generates without the context (the condition dropped, as in training's
    dropout): for a silent region, where conditioning on the silence would ask for silence. ``frame``: a
    conditioned denoiser's grid and harmony (``frame_conditions``), each with its scale in ``frame_scales``.
    """
    if not use_context:
        cfg_context = 1.0
    frame = dict(frame or {})
    frame_scales = {name: float((frame_scales or {}).get(name, 1.0)) for name in frame}
    # pass order: none, context, full (context + style). Without a style, full == context.
    passes = ("full",) if cfg_context == 1 and (cfg_style == 1 or style is None) else (
        ("none", "context") if style is None else ("none", "context", "full"))
    without = tuple(f"without_{name}" for name, scale in frame_scales.items() if scale != 1)
    passes = passes + without
    style_on = lambda p: p == "full" or p.startswith("without_")  # a pass without a condition is full less it
    return GuidancePasses(
        passes=passes,
        context_mask=np.array([0.0 if p == "none" or not use_context else 1.0 for p in passes], np.float32),
        style_mask=np.array([1.0 if style_on(p) and style is not None else 0.0 for p in passes], np.float32),
        style=np.asarray(style if style is not None else np.zeros(contract.style_dim), np.float32),
        instrument=contract.instruments.index(instrument), cfg_context=cfg_context, cfg_style=cfg_style,
        frame=frame, frame_scales=frame_scales, frame_taken=tuple(contract.frame_inputs))


def make_guided_denoiser(bundle: Bundle, context: np.ndarray, style: np.ndarray | None, instrument: str,
                         cfg_context: float, cfg_style: float, *, use_context: bool = True, frame: dict | None = None,
                         frame_scales: dict | None = None, few_step: bool = False):
    """``denoise(x, sigma)`` for one request: the guidance passes of every take in ``x`` (takes, C, n) run as one
    batch through the backend (``guidance_passes`` says which; ``use_context=False`` drops the context;
    ``frame``: a conditioned denoiser's grid and harmony with their ``frame_scales``; ``few_step``: through the
    distilled denoiser)."""
    guidance = guidance_passes(bundle.contract, style, instrument, cfg_context, cfg_style, use_context=use_context,
                               frame=frame, frame_scales=frame_scales)
    passes, cfg_context, cfg_style = list(guidance.passes), guidance.cfg_context, guidance.cfg_style
    per_take = len(passes)
    frame = guidance.frame_inputs(context.shape[-1])

    def rows(takes: int) -> tuple:
        """The batch's unchanging inputs for ``takes`` takes: take-major rows, each take's passes in order."""
        batch = takes * per_take
        flat = {name: np.repeat(value, batch, axis=0) if value.ndim == 3 else np.tile(value, takes)
                for name, value in frame.items()}
        return (np.repeat(context[None].astype(np.float32), batch, axis=0), np.tile(guidance.context_mask, takes),
                np.repeat(guidance.style[None], batch, axis=0), np.tile(guidance.style_mask, takes),
                np.full(batch, guidance.instrument, np.int64), flat)

    cached = {}

    def denoise(x: np.ndarray, sigma: float) -> np.ndarray:
        takes = x.shape[0]
        if takes not in cached:
            cached[takes] = rows(takes)
        contexts, context_mask, styles, style_mask, instruments, flat = cached[takes]
        xs = np.repeat(x.astype(np.float32), per_take, axis=0)
        out = bundle.backend.denoise(xs, np.full(len(xs), sigma, np.float32), contexts, context_mask, styles,
                                     style_mask, instruments, few_step=few_step, **flat)
        out = out.reshape(takes, per_take, *out.shape[1:])
        predictions = {name: out[:, index] for index, name in enumerate(passes)}
        if passes == ["full"]:
            return predictions["full"]
        if "full" not in predictions:  # no style: the context pass is the full one
            predictions["full"] = predictions["context"]
        return guided(predictions, cfg_context=cfg_context, cfg_style=cfg_style, frame_scales=guidance.frame_scales)

    return denoise


def frame_conditions(bundle: Bundle, request: GenerateRequest, inputs: Inputs) -> tuple[dict, dict]:
    """A conditioned denoiser's beat grid and harmony for this request (``models/conditioning.py``), and what they
    came from for the result's info. The grid: the request's tempo, else the beats tracked in the context (none over
    silence); the harmony: the request's chords, else the harmony heard in the context."""
    contract = bundle.contract
    taken = dict(contract.frame_inputs)
    frames, rate_hz = inputs.context_latents.shape[-1], contract.latent_rate_hz
    frame, info = {}, {}
    if "grid" in taken:
        tempo = request.tempo
        if tempo is not None:
            frame["grid"] = beat_grid(frames, rate_hz, tempo.bpm, tempo.beats_per_bar, tempo.region_start_beats)
            info["beat_grid"] = "the host's tempo"
        elif not inputs.silent_context:
            beats = estimate_beats(inputs.mono, bundle.sample_rate)
            if len(beats) >= 2:
                frame["grid"] = tracked_grid(frames, rate_hz, beats, 4)
                info["beat_grid"] = f"{len(beats)} beats tracked in the context"
    if "harmony" in taken:
        if request.chords is not None:
            tempo = request.tempo
            frame["harmony"] = chord_frames(chord_chart(request.chords, tempo), frames, rate_hz, tempo.bpm,
                                            tempo.region_start_beats)
            info["harmony"] = "the chords given"
        elif not inputs.silent_context:
            frame["harmony"] = context_harmony(inputs.mono, bundle.sample_rate, frames, rate_hz)
            info["harmony"] = "heard in the context"
    return frame, info


def step_constants(guidance: GuidancePasses, context: np.ndarray, *, known: np.ndarray | None = None,
                   keep: np.ndarray | None = None, loop_period: int | None = None) -> dict[str, np.ndarray]:
    """A request's unchanging inputs of ``guided_step.onnx`` (``runtime.STEP_INPUTS``): the conditions,
    the guidance, and the controls as known regions: inpainting's ``known`` latents (1, C, n) where
    ``keep`` (n,) is 1, the loop's period in frames. A control left out is an input that changes nothing."""
    frames = context.shape[-1]
    index = np.arange(frames) % (loop_period or frames)
    return {
        "context": context[None].astype(np.float32), "context_mask": guidance.context_mask,
        "style": guidance.style[None], "style_mask": guidance.style_mask,
        "instrument": np.array([guidance.instrument], np.int64),
        "guidance": np.array([guidance.cfg_context, guidance.cfg_style, guidance.rescale], np.float32),
        "pass_index": guidance.pass_index,
        "known": np.zeros((1, *context.shape), np.float32) if known is None else known.astype(np.float32),
        "keep": np.zeros(frames, np.float32) if keep is None else keep.astype(np.float32),
        "loop_index": index.astype(np.int64), "loop_counts": np.bincount(index).astype(np.float32),
    } | guidance.frame_inputs(frames) | guidance.frame_step_inputs()


def _level_gain(stem: np.ndarray, context: np.ndarray, context_share: float = 1.0) -> float:
    """The gain that brings the stem to a level that sits with the context (half its RMS), never above -1 dBFS peak.

    ``context_share`` < 1 (a stem matched to a reference, ``style_match``) moves the gain only that share of the way
    in dB: 0 keeps the level the stem decoded to (the reference's, which matched latents carry). Either way the stem
    stays within ``MATCHED_LEVEL_WINDOW_DB`` of the context's level (a take that rests where the reference plays, or
    a reference far louder or quieter than the mix) and below the peak cap."""
    rms = _rms(stem)
    if rms < 1e-6:
        return 1.0
    context_rms = _rms(context)
    if context_rms > 1e-6:
        with_context = 0.5 * context_rms / rms
        window = 10 ** (MATCHED_LEVEL_WINDOW_DB / 20)
        gain = float(np.clip(with_context ** context_share, with_context / window, with_context * window))
    else:
        gain = 1.0
    peak = max(float(stem.max()), -float(stem.min())) * gain
    if peak > 0.891:
        gain *= 0.891 / peak
    return gain


def _rms(audio: np.ndarray) -> float:
    """Root mean square of a 1-D signal, without a squared copy of a long region."""
    return float(np.sqrt(np.dot(audio, audio) / audio.size)) if audio.size else 0.0


def _match_level(decoded: np.ndarray, reference: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """``decoded`` scaled so its RMS (weighted by ``weight`` per sample) equals ``reference``'s there: the
    autoencoder's round trip need not keep the level, a variation or a regenerated range must."""
    weight = np.ones_like(decoded) if weight is None else weight
    decoded_power = float(np.sum(weight * decoded**2))
    if decoded_power < 1e-12:
        return decoded
    return (decoded * np.sqrt(float(np.sum(weight * reference**2)) / decoded_power)).astype(np.float32)


@dataclass(frozen=True)
class Inputs:
    """A request's audio, checked and encoded: what every later stage of ``generate`` works from."""

    context: np.ndarray  # (channels, frames) at the request's rate
    mono: np.ndarray  # the context mixed down, at the models' rate
    context_latents: np.ndarray  # (C, n)
    stem: np.ndarray | None  # the producer's own stem (to regenerate a range of or vary), as the context
    known: np.ndarray | None  # its latents (1, C, n)
    silent_context: bool  # below SILENT_CONTEXT_RMS: generated from nothing


def validate(bundle: Bundle, request: GenerateRequest) -> GenerateRequest:
    """Check ``request`` against the schema and the models, and fill in the models' default guidance, steps and
    sampler: the few-step sampler (guidance 1: the distilled denoiser has it built in) for a request that sets no
    sampler, steps or guidance, where a distilled denoiser is loaded and is the default for the instrument."""
    _check(bundle, request)
    contract = bundle.contract
    if request.sampler is None and uses_few_step(contract.few_step, request):
        request = replace(request, sampler=FEW_STEP)
    if request.sampler == FEW_STEP:
        defaults = {key: 1.0 for key in DEFAULT_GUIDANCE} | {"steps": contract.few_step.steps}
    else:
        sampling = {k: v for k, v in contract.sampling.items() if k != "candidates"}  # takes: _takes decides
        defaults = guidance_for(contract.guidance, request.instrument) | sampling
    return replace(request, **{k: v for k, v in defaults.items() if getattr(request, k) is None})


def uses_few_step(few_step: FewStep | None, request: GenerateRequest) -> bool:
    """Whether a request that names no sampler gets the few-step one: a distilled denoiser is loaded, it is the
    default for the instrument, and the request sets no steps or guidance (those ask for the full sampler)."""
    return (few_step is not None and request.instrument in few_step.default_for and request.steps is None
            and not guidance_asked(request))


def guidance_asked(request: GenerateRequest) -> list[str]:
    """The guidance scales the request sets itself (DEFAULT_GUIDANCE's names); the rest are the model's."""
    return [key for key in DEFAULT_GUIDANCE if getattr(request, key) is not None]


def encode(bundle: Bundle, request: GenerateRequest) -> Inputs:
    """The context (and the producer's stem) validated, mixed down, resampled and encoded."""
    context = validate_audio(request.context, request.sample_rate, max_duration_seconds=request.max_duration_seconds,
                             what="context")
    frames = context.shape[1]
    mono = resample(to_mono(context), request.sample_rate, bundle.sample_rate)[0]
    stem = known = None
    if request.stem is not None:
        stem = validate_audio(request.stem, request.sample_rate, max_duration_seconds=request.max_duration_seconds,
                              what="stem")
        if stem.shape[1] != frames:
            raise AudioError(f"the stem has {stem.shape[1]} frames and the context {frames}: "
                             "they must cover the same region")
    context_latents = _encode(bundle, mono)
    if stem is not None:
        known = _encode(bundle, resample(to_mono(stem), request.sample_rate, bundle.sample_rate)[0])[None]
    silent = _rms(mono) < SILENT_CONTEXT_RMS
    return Inputs(context, mono, context_latents, stem, known, silent)


@dataclass(frozen=True)
class Sampling:
    """How one request samples: the schedule, the guided denoiser with its controls, and where a take starts."""

    request: GenerateRequest
    inputs: Inputs
    schedule: np.ndarray
    guidance: GuidancePasses
    denoise: Callable[[np.ndarray, float], np.ndarray]
    period: int | None  # loop period, latent frames
    release: float  # loop ties released below this sigma
    keep: np.ndarray | None  # 1 where the producer's stem is kept (regenerating a range)
    step_sampler: Callable | None  # the backend's compiled step graph, if it has one
    controls: dict  # what the controls did, for the result's info
    solver: str  # the solver's update (engine/sampling.py): the request's sampler, or the few-step one's

    def start(self, take_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One take's start, drawn from ``take_rng``: the noisy latents and the sigmas to run."""
        latents, request = self.inputs.context_latents, self.request
        noise = take_rng.standard_normal((1, *latents.shape)).astype(np.float32)
        if self.period is not None:
            noise = noise[..., np.arange(latents.shape[-1]) % self.period]  # the same start noise in every repeat
        if self.keep is not None:
            return self.inputs.known + noise * self.schedule[0], self.schedule
        if request.variation_strength is not None:  # a variation runs only the schedule's tail
            x, tail = controls.variation_start(self.inputs.known[0], request.variation_strength, self.schedule,
                                               take_rng)
            return x[None], tail
        return noise * self.schedule[0], self.schedule

    def sample(self, x: np.ndarray, sigmas: np.ndarray, callback=None) -> np.ndarray:
        """One graph run per evaluation where the backend has the step graph (the controls travel as its inputs),
        else the pure numpy sampler over ``denoise``: the same sample within float32 rounding."""
        if len(sigmas) < 2:
            return x
        if self.step_sampler is not None:
            return self.step_sampler(x, sigmas, self.solver, release_sigma=self.release, callback=callback)
        return get_sampler(self.solver)(self.denoise, x, sigmas, callback=callback)


def plan_sampling(bundle: Bundle, request: GenerateRequest, inputs: Inputs, style: np.ndarray | None) -> Sampling:
    """The schedule, the guidance passes and the producer's controls (loops, a range to regenerate, a variation)."""
    contract = bundle.contract
    latents = inputs.context_latents
    schedule = get_sigmas_karras(request.steps, contract.sigma_min, contract.sigma_max)
    frame, info = frame_conditions(bundle, request, inputs)
    conditions = dict(use_context=not inputs.silent_context, frame=frame,
                      frame_scales={name: getattr(request, key) for name, key in FRAME_GUIDANCE.items()})
    guidance = guidance_passes(contract, style, request.instrument, request.cfg_context, request.cfg_style,
                               **conditions)
    few_step = request.sampler == FEW_STEP
    denoise = make_guided_denoiser(bundle, latents, style, request.instrument, request.cfg_context, request.cfg_style,
                                   few_step=few_step, **conditions)
    if inputs.silent_context:
        info["context"] = "none (silent region)"
    period, release, keep = None, float("inf"), None
    if request.loop_seconds is not None:
        period = controls.loop_period_frames(request.loop_seconds, contract.latent_rate_hz, latents.shape[-1])
        release = controls.release_sigma(schedule, request.loop_strength)
        denoise = controls.looping(denoise, period, release)
        info["loop_seconds"] = period / contract.latent_rate_hz
        info["loop_strength"] = request.loop_strength
    if request.regenerate_seconds is not None:
        start_seconds, end_seconds = request.regenerate_seconds
        keep = controls.keep_mask(latents.shape[-1], contract.latent_rate_hz, start_seconds, end_seconds,
                                  controls.CROSSFADE_FRAMES / contract.latent_rate_hz)
        denoise = controls.inpainting(denoise, inputs.known, keep)
        info["regenerate_seconds"] = [float(start_seconds), float(end_seconds)]
    elif request.variation_strength is not None:
        info["variation_strength"] = request.variation_strength
    step_sampler = bundle.backend.step_sampler(step_constants(
        guidance, latents, known=inputs.known if keep is not None else None, keep=keep, loop_period=period),
        few_step=few_step)
    solver = contract.few_step.solver if few_step else request.sampler
    return Sampling(request, inputs, schedule, guidance, denoise, period, release, keep, step_sampler, info, solver)


def sample_takes(bundle: Bundle, sampling: Sampling, rng: np.random.Generator, progress: Progress | None
                 ) -> tuple[np.ndarray, dict | None]:
    """Sample the request's takes together, batches of takes through the denoiser (as many as fit in
    ``TAKE_BATCH_FRAMES`` latent frames: all four of a bass up to two minutes), and choose one: take 0 is the seed's
    own sample; with more takes (a bass), the one whose notes sit most in the context's pitch classes. Returns the
    chosen latents and, with several takes, what was chosen and why."""
    request, contract = sampling.request, bundle.contract
    takes = _takes(bundle, request, sampling.inputs.silent_context)
    starts = [sampling.start(rng if take == 0 else np.random.default_rng((request.seed, take))) for take in range(takes)]
    sigmas = starts[0][1]
    per_batch = max(1, TAKE_BATCH_FRAMES // sampling.inputs.context_latents.shape[-1])
    batches = [np.concatenate([x for x, _ in starts[first:first + per_batch]]) for first in range(0, takes, per_batch)]
    parts = []
    for index, batch in enumerate(batches):
        callback = ((lambda i, total, _x, _x0, index=index: progress(index * total + i + 1, len(batches) * total))
                    if progress else None)
        parts.append(sampling.sample(batch, sigmas, callback))
    latents = np.concatenate(parts)
    if takes == 1:
        return latents, None
    weights = context_chroma_weights(sampling.inputs.mono, bundle.sample_rate)
    notes = bundle.backend.notes(latents)
    shares = [in_key_share(notes[take], weights, lowest_midi=contract.note_lowest_midi,
                           frame_seconds=contract.stft_hop_length / contract.sample_rate) for take in range(takes)]
    chosen, best = 0, shares[0] if np.isfinite(shares[0]) else -np.inf
    for take, share in enumerate(shares[1:], start=1):
        if share > best:  # a NaN share (no notes heard) never beats another take
            chosen, best = take, share
    return latents[chosen:chosen + 1], {"takes": takes, "chosen": chosen,
                                        "in_key_share": [round(float(v), 4) for v in shares]}


def decoder(bundle: Bundle, request: GenerateRequest, inputs: Inputs, style: np.ndarray | None, match: float
            ) -> Callable[[np.ndarray], np.ndarray]:
    """Latents -> a mono stem at the request's rate and the context's exact length (statistics matched to a
    reference by ``match`` first)."""
    frames = inputs.context.shape[1]

    def to_host(latents: np.ndarray) -> np.ndarray:
        if match > 0:
            latents = match_latent_statistics(latents, style, match)
        stem = _decode(bundle, latents, len(inputs.mono), request.instrument)
        stem = resample(stem[None], bundle.sample_rate, request.sample_rate)[0]
        return np.pad(stem, (0, frames - len(stem))) if len(stem) < frames else stem[:frames]

    return to_host


def decode(sampling: Sampling, to_host, latents: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, int]:
    """The chosen take decoded (None for a variation of strength 0: the input itself). A fresh stem that
    decodes silent over a sounding region is sampled again, up to SILENT_STEM_RETRIES more seeds, (seed,
    100 + k), apart from the takes'. Returns the audio, the latents it came from and the retries."""
    request, inputs = sampling.request, sampling.inputs
    raw = None if request.variation_strength == 0 else to_host(latents)
    retries = 0
    while (raw is not None and inputs.stem is None and not inputs.silent_context and retries < SILENT_STEM_RETRIES
           and _rms(raw) < SILENT_STEM_RMS):
        retries += 1
        x, sigmas = sampling.start(np.random.default_rng((request.seed, 100 + retries)))
        latents = sampling.sample(x, sigmas)
        raw = to_host(latents)
    return raw, latents, retries


def level(bundle: Bundle, request: GenerateRequest, inputs: Inputs, raw: np.ndarray | None, match: float) -> np.ndarray:
    """The stem at its level and channel count: a fresh stem levelled to sit with the context (or at a matched
    reference's level), a variation at the input's level, a regenerated range crossfaded into the input."""
    channels, frames = inputs.context.shape
    stem = inputs.stem
    if raw is None:
        return stem  # strength 0 is the input itself, not its trip through the autoencoder
    if stem is None:
        gain = _level_gain(raw, to_mono(inputs.context)[0], context_share=1.0 - match)
        out = np.empty((channels, frames), np.float32)  # written in place: a 5-minute stem is 50 MiB a channel
        np.multiply(raw, gain, out=out[0])
        out[1:] = out[0]
        return out
    if request.regenerate_seconds is None:  # a variation keeps the input's level, whatever the decoder gives back
        return np.repeat(_match_level(raw, to_mono(stem)[0])[None], stem.shape[0], axis=0)
    start_seconds, end_seconds = request.regenerate_seconds  # the input's own samples outside the range
    keep_samples = controls.keep_mask(frames, request.sample_rate, start_seconds, end_seconds,
                                      controls.CROSSFADE_FRAMES / bundle.contract.latent_rate_hz)
    raw = _match_level(raw, to_mono(stem)[0], weight=keep_samples)  # at the input's level where both exist
    return keep_samples * stem + (1.0 - keep_samples) * raw


def widen(sampling: Sampling, to_host, latents: np.ndarray, out: np.ndarray, raw: np.ndarray | None,
          rng: np.random.Generator) -> np.ndarray:
    """Pseudo-stereo: the right channel a low-strength variation of the left, at the left's gain."""
    request = sampling.request
    right_x, right_sigmas = controls.variation_start(latents[0], controls.STEREO_VARIATION_STRENGTH,
                                                     sampling.schedule, rng)
    right = to_host(sampling.sample(right_x[None], right_sigmas))
    reference = to_host(latents) if raw is None else raw  # the right channel gets the left's gain
    gain = _rms(to_mono(out)[0]) / max(_rms(reference), 1e-8)
    return controls.pseudo_stereo(to_mono(out)[0], right * gain, request.stereo_width)


def generate(bundle: Bundle, request: GenerateRequest, *, progress: Progress | None = None) -> GenerateResult:
    """Generate a stem for ``request.context``; the result has the context's rate and length, and its
    channel count (or 2 with ``stereo_width`` > 0). The stages, each a function above: validate, encode,
    style, plan the sampling, sample the takes and choose, decode, level (and widen)."""
    timings = {}
    started = time.perf_counter()
    request = validate(bundle, request)
    inputs = encode(bundle, request)
    style = _style(bundle, request)
    timings["encode_seconds"] = time.perf_counter() - started

    sampling = plan_sampling(bundle, request, inputs, style)
    info_controls = dict(sampling.controls)
    match = _style_match(bundle, request, style)
    if match > 0:
        info_controls["style_match"] = match
    rng = np.random.default_rng(request.seed)
    sample_started = time.perf_counter()
    latents, candidates = sample_takes(bundle, sampling, rng, progress)
    if candidates is not None:
        info_controls["candidates"] = candidates
    timings["sample_seconds"] = time.perf_counter() - sample_started

    decode_started = time.perf_counter()
    to_host = decoder(bundle, request, inputs, style, match)
    raw, latents, retries = decode(sampling, to_host, latents)
    if retries:
        info_controls["silent_retries"] = retries
    out = level(bundle, request, inputs, raw, match)
    if request.stereo_width > 0:
        out = widen(sampling, to_host, latents, out, raw, rng)
        info_controls["stereo_width"] = request.stereo_width
    timings["decode_seconds"] = time.perf_counter() - decode_started
    timings["total_seconds"] = time.perf_counter() - started
    info = {"seed": request.seed, "instrument": request.instrument, "steps": request.steps,
            "sampler": request.sampler, **{key: getattr(request, key) for key in DEFAULT_GUIDANCE},
            "style": _style_kind(request), "models": bundle.versions,
            "backend": bundle.backend.name, "runtime": bundle.runtime, "step_graph": sampling.step_sampler is not None,
            "controls": info_controls,
            "timings": {k: round(v, 3) for k, v in timings.items()}}
    return GenerateResult(np.ascontiguousarray(out, dtype=np.float32), request.sample_rate, info)


def arrange(bundle: Bundle, request: GenerateRequest, instruments: list[str], *,
            progress: Progress | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Build an arrangement one stem at a time: each stem is generated against the context plus the
    stems before it. Returns ({instrument: stem}, mix of the context and every stem); seeds differ
    per stem (``seed + index``)."""
    if not instruments:
        raise ValueError("an arrangement needs at least one instrument")
    stems: dict[str, np.ndarray] = {}
    context = validate_audio(request.context, request.sample_rate, max_duration_seconds=request.max_duration_seconds,
                             what="context")
    mix = context.copy()
    for index, instrument in enumerate(instruments):
        if instrument in stems:
            raise ValueError(f"{instrument} appears twice in the arrangement")
        step = replace(request, context=mix, instrument=instrument, seed=request.seed + index,
                       candidates=request.candidates if instrument == "bass" else None)  # drums: no key to choose by
        result = generate(bundle, step, progress=progress)
        stems[instrument] = result.audio
        mix = _add(mix, result.audio)
    peak = float(np.abs(mix).max())
    return stems, (mix * (0.891 / peak) if peak > 0.891 else mix).astype(np.float32)


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum two (channels, frames) signals, mono widened to stereo where they differ."""
    if a.shape[0] != b.shape[0]:
        a, b = (np.repeat(v, 2, axis=0) if v.shape[0] == 1 else v for v in (a, b))
    return (a + b).astype(np.float32)


def request_from_params(params: dict, context: np.ndarray, sample_rate: int, **audio) -> GenerateRequest:
    """One request from the flat parameters every entry point speaks (CLI flags, bridge ``params``).

    Bar-based values need ``tempo_bpm`` (and optionally ``beats_per_bar``, ``region_start_beats``):
    ``regenerate_bars`` is two bar positions like ``["5", "9.3"]``; ``loop_bars`` a number of bars.
    ``audio`` passes the arrays (``stem``, ``style_audio``, ...) straight to the request.
    """
    params = check_params(params)
    fields = {k: v for k, v in params.items() if k not in ("regenerate_bars", "loop_bars", "tempo_bpm",
                                                           "beats_per_bar", "region_start_beats")}
    tempo = None
    if params.get("tempo_bpm") is not None:
        tempo = controls.Tempo(float(params["tempo_bpm"]), int(params.get("beats_per_bar", 4)),
                               float(params.get("region_start_beats", 0.0)))
    elif any(params.get(k) is not None for k in ("regenerate_bars", "loop_bars", "region_start_beats")):
        raise ValueError("bar positions need the tempo (tempo_bpm)")
    if params.get("regenerate_bars") is not None:
        if params.get("regenerate_seconds") is not None:
            raise ValueError("give the range to regenerate in seconds or in bars, not both")
        start, end = params["regenerate_bars"]
        fields["regenerate_seconds"] = (tempo.position_seconds(start), tempo.position_seconds(end))
    elif fields.get("regenerate_seconds") is not None:
        start, end = fields["regenerate_seconds"]
        fields["regenerate_seconds"] = (float(start), float(end))
    if params.get("loop_bars") is not None:
        if params.get("loop_seconds") is not None:
            raise ValueError("give the loop length in seconds or in bars, not both")
        fields["loop_seconds"] = tempo.bars_seconds(float(params["loop_bars"]))
    if params.get("chords") is not None:
        chord_chart(params["chords"], tempo)
    return GenerateRequest(context=context, sample_rate=sample_rate, tempo=tempo, **fields, **audio)


def load_default_generator():
    """The bridge's compute on the shipped models."""
    return make_generator(load_bundle())


def style_pads(bundle: Bundle) -> dict[str, list[dict]]:
    """Each instrument's style pad as a plugin draws it (``StylePad.layout``); none where the prior has no pad."""
    pad_of = getattr(bundle.prompts, "pad", None)  # none without a prompt encoder (or with a stand-in that has no pads)
    pads = {}
    for instrument in PAD_SOUNDS if pad_of is not None else ():
        try:
            pads[instrument] = pad_of(instrument).layout()
        except ValueError:  # a prior without this pad (StyleUnavailable)
            continue
    return pads


def make_generator(bundle: Bundle):
    """The bridge's compute: ``run(params, context, sample_rate, progress, cancelled)`` over ``bundle``."""

    def run(params: dict, context: np.ndarray, sample_rate: int, progress, cancelled):
        def on_step(step: int, total: int) -> None:
            if cancelled():
                raise Cancelled()
            progress(step, total)

        params = dict(params)
        stem = params.pop("stem", None)  # the bridge's ``source_job_id`` result, resolved by the server
        audio = {k: params.pop(k) for k in ("style_audio", "style_sample_rate") if k in params}  # ``style_job_id``'s
        midi = params.pop("midi", False)
        request = request_from_params(params, context, sample_rate, stem=stem, **audio)
        result = generate(bundle, request, progress=on_step)
        info = result.info
        if midi:  # the stem as a Standard MIDI File, small enough to travel base64 in the job's info
            import base64

            from backline.engine.transcribe import stem_to_midi

            midi = stem_to_midi(result.audio, result.sample_rate, request.instrument, bpm=params.get("tempo_bpm"),
                                tempo_audio=context)
            info = {**info, "midi_base64": base64.b64encode(midi.data).decode("ascii"), "midi_bpm": midi.bpm,
                    "midi_tempo_source": midi.tempo_source}
        return result.audio, result.sample_rate, info

    def check(params: dict) -> None:
        """Refuse bad parameters before any audio is uploaded (the bridge calls this at submit)."""
        if not isinstance(params.get("midi", False), bool):
            raise ValueError(f"midi must be true or false, got {params['midi']!r}")
        checked = check_params({k: v for k, v in params.items() if k != "midi"})
        if checked.get("chords") is not None:  # a chart that cannot be read is refused before the upload too
            tempo = checked.get("tempo_bpm")
            chord_chart(checked["chords"], None if tempo is None else controls.Tempo(
                float(tempo), int(checked.get("beats_per_bar") or 4)))

    run.check_params = check
    run.style_pads = style_pads(bundle)
    # what the bridge's welcome names: each model and its version, and where it runs
    run.models = [f"{part} {version}" for part, version in sorted(bundle.versions.items())] + [f"runtime {bundle.runtime}"]
    return run


__all__ = ["AudioError", "Bundle", "BACKENDS", "Cancelled", "GenerateRequest", "GenerateResult", "arrange", "generate",
           "load_bundle", "request_from_params"]
