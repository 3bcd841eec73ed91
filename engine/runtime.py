"""Runtime backends: one interface over the models, run by torch (development) or onnxruntime (default install).

A backend turns numpy in into numpy out and knows its models' contract:

    encode(audio (batch, samples) float32 at contract.sample_rate)
        -> latents (batch, latent_channels, ceil(samples / hop_length)), already scaled by latent_scale
    decode(latents (batch, latent_channels, n), instrument=None) -> audio (batch, n * hop_length)
        with instrument "bass" and an autoencoder that has a note head, the low band's phase follows the
        notes the head reads (models/dsp.py)
    denoise(x, sigma, context, context_mask, style, style_mask, instrument) -> x0 estimate, shaped like x
        every input has the batch on axis 0, so the guidance passes run in one call; ``few_step=True``: the
        estimate of a denoiser distilled from it, when one is loaded beside it (``ModelContract.few_step``)

The onnxruntime backend imports numpy and onnxruntime only (never torch), so ``pip install backline``
without extras can generate with exported models. Its graphs and the spectral transforms:

* ``autoencoder_encoder.onnx``: STFT spectrum (real, imag) -> scaled latents;
* ``autoencoder_decoder.onnx``: scaled latents -> STFT spectrum (real, imag);
* ``autoencoder_notes.onnx``, only for an autoencoder with a note head: scaled latents -> note logits (a
  graph of its own, so a bass's takes are judged without running the whole decoder);
* ``denoiser.onnx``: the EDM-preconditioned denoiser, dynamic batch and frame axes;
* ``guided_step.onnx``: one sampler evaluation whole: the guidance passes batched through the same
  denoiser, their combination (with the rescale that guards against over-saturation), the controls'
  per-step work (inpainting's known region, loop tying) and the solver's update, so a step is one
  ``run`` whose state (x, the previous estimate) can stay on the device (``StepGraphSampler``);
* ``few_step_denoiser.onnx``, ``few_step_guided_step.onnx``, when a distilled denoiser ships beside the
  denoiser (``backline export --few-step``): the same two graphs of the student, for the "few_step" sampler.

The STFT and the inverse STFT (Hann window, "same" padding, overlap-add normalised by the summed
squared window, as ``models.autoencoder`` computes them) run here in numpy rather than inside the
graphs: ONNX has no inverse real DFT usable from the exporter, a DFT written as a matrix product
costs about 4 M multiply-adds per frame at n_fft = 2048 (more than the rest of the decoder), and
numpy's pocketfft is exact and takes milliseconds. The parameters travel in the graphs' metadata
(``spectral_frontend``), so another runtime (C++) can do the same.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from backline.models.conditioning import frame_inputs
from backline.models.dsp import istft, note_frequencies, note_phase, pitch_locked, stft
from backline.models.style_space import STATISTICS_SPACE

ONNX_FILES = {"encoder": "autoencoder_encoder.onnx", "decoder": "autoencoder_decoder.onnx",
              "denoiser": "denoiser.onnx", "step": "guided_step.onnx"}
GRAPH_NAMES = {"encoder": "encoder", "decoder": "decoder", "denoiser": "denoiser", "step": "guided_step",
               "notes": "notes", "few_step_denoiser": "denoiser", "few_step_step": "guided_step"}
NOTES_FILE = "autoencoder_notes.onnx"  # the note head's graph, written by `backline export` when there is one
# Reduced precision, CPU only: the denoiser and the step graph with int8 weights and dynamically quantised
# activations (``backline export --int8`` writes them beside the float graphs; the autoencoder stays float).
PRECISIONS = ("fp32", "int8")
INT8_FILES = {"denoiser": "denoiser.int8.onnx", "step": "guided_step.int8.onnx"}
# A distilled denoiser beside the full one (``backline export --few-step``): its own two graphs, run by the
# "few_step" sampler (FewStep)
FEW_STEP_FILES = {"few_step_denoiser": "few_step_denoiser.onnx", "few_step_step": "few_step_guided_step.onnx"}
DENOISING_PARTS = ("denoiser", "step", "few_step_denoiser", "few_step_step")  # run every step, at one shape
ONNX_CONTRACT_VERSION = "1"
DENOISER_INPUTS = ("x", "sigma", "context", "context_mask", "style", "style_mask", "instrument")
# guided_step.onnx, for T takes of P guidance passes over n latent frames (x and the states batch T):
#   x (T, C, n), sigma (1,)                       where the denoiser is evaluated
#   context (1, C, n), context_mask (P,), style (1, style_dim), style_mask (P,), instrument (1,) int64
#   guidance (3,) = cfg_context, cfg_style, rescale; pass_index (3,) int64 = the rows of the passes
#                   none, context, full (a pass not run points at the one standing in for it)
#   known (1, C, n), keep (n,)                    inpainting: the estimate is ``known`` where keep is 1
#   loop_index (n,) int64, loop_counts (period,)  loops: frame -> place in the period, repeats per place
#   tie (1,)                                      1: the estimate is tied to the period at this evaluation
#   coefficients (4,), previous_x0 (T, C, n), step_start (T, C, n)   the solver (``sampling.solver_plan``)
# -> x_next (T, C, n), denoised (T, C, n)
STEP_INPUTS = ("x", "sigma", "context", "context_mask", "style", "style_mask", "instrument", "guidance", "pass_index",
               "known", "keep", "loop_index", "loop_counts", "tie", "coefficients", "previous_x0", "step_start")
STEP_OUTPUTS = ("x_next", "denoised")
# A denoiser told the beat and the chords (ModelContract.frame_inputs) takes, after those, per condition k in the
# contract's order: k (batch or 1, channels, n) and k_mask (batch or P,); its step graph also
#   frame_guidance (K,)                           each condition's scale (1: no pass without it)
#   frame_pass_index (K,) int64                   the row of the pass without it (any row when its scale is 1)
STEP_INT_INPUTS = ("instrument", "pass_index", "loop_index", "frame_pass_index")


def frame_input_names(frame_inputs) -> tuple[str, ...]:
    """The per-frame inputs a conditioned denoiser's graphs take after ``DENOISER_INPUTS`` (none for an
    unconditioned one): ``grid, grid_mask, harmony, harmony_mask`` in the contract's order."""
    return tuple(name for condition, _ in frame_inputs for name in (condition, f"{condition}_mask"))


def denoiser_input_names(frame_inputs=()) -> tuple[str, ...]:
    return DENOISER_INPUTS + frame_input_names(frame_inputs)


def step_input_names(frame_inputs=()) -> tuple[str, ...]:
    extra = ("frame_guidance", "frame_pass_index") if frame_inputs else ()
    return STEP_INPUTS + frame_input_names(frame_inputs) + extra


def onnx_files(precision: str = "fp32") -> dict[str, str]:
    """The graph file of each part for ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return {**ONNX_FILES, **(INT8_FILES if precision == "int8" else {})}


def default_onnx_dir() -> Path:
    """``$BACKLINE_ONNX_DIR`` when set, else the ``onnx`` folder beside the shipped weights."""
    if os.environ.get("BACKLINE_ONNX_DIR"):
        return Path(os.environ["BACKLINE_ONNX_DIR"])
    import backline.models  # the package's __init__ only: no torch

    return Path(backline.models.__file__).parent / "onnx"


class RuntimeModelError(ValueError):
    """Model files that are missing, not Backline's, or that disagree with each other."""


def latent_space_of(latent_space: str | None, version: str | None) -> str | None:
    """The identity of the latent space an autoencoder makes: its config's ``latent_space`` (the version of the
    model whose encoder it has; a decoder-only fine-tune keeps its init's), else its own version."""
    return latent_space or version


def check_latent_space(what: str, recorded: dict | None, latent_space: str | None) -> None:
    """Refuse a model trained on another latent space than the one the loaded autoencoder makes.

    A denoiser (``config.provenance.autoencoder``) and a prompt prior (``config.autoencoder``) record the
    autoencoder whose latents they learnt; ``latent_space`` is the loaded autoencoder's (``latent_space_of``).
    Files that record none (older ones, tests' tiny models) are taken as they are.
    """
    recorded = recorded or {}
    trained_on = recorded.get("latent_space") or recorded.get("version")
    if trained_on and latent_space and trained_on != latent_space:
        raise RuntimeModelError(f"{what} was trained on the latents of autoencoder {trained_on}, but the autoencoder "
                                f"loaded beside it makes those of {latent_space}; ship them together")


@dataclass(frozen=True)
class ModelContract:
    """The numbers a generation needs from its models, read from their metadata."""

    sample_rate: int
    hop_length: int
    latent_channels: int
    latent_rate_hz: float
    latent_scale: float
    style_dim: int
    sigma_min: float
    sigma_max: float
    sigma_data: float
    instruments: tuple[str, ...]
    n_fft: int
    stft_hop_length: int
    versions: dict = field(default_factory=dict)
    guidance: dict = field(default_factory=lambda: dict(DEFAULT_GUIDANCE))  # the denoiser's default scales
    sampling: dict = field(default_factory=lambda: dict(DEFAULT_SAMPLING))  # its default steps, sampler, bass takes
    style_space: str = STATISTICS_SPACE  # what the denoiser's style embeddings are (engine/style.py)
    latent_space: str | None = None  # which autoencoder's latents (check_latent_space)
    note_lowest_midi: int | None = None  # the autoencoder's note head's lowest note; None: it has none
    frame_inputs: tuple[tuple[str, int], ...] = ()  # (name, channels): the beat grid and harmony it is told, if any
    few_step: "FewStep | None" = None  # a distilled denoiser loaded beside the denoiser, if any


    @classmethod
    def from_configs(cls, ae: dict, dn: dict, *, instruments, versions: dict, guidance: dict,
                     sampling: dict | None = None, few_step: "FewStep | None" = None) -> "ModelContract":
        """The one way a contract is made: from the autoencoder's and the denoiser's configs, as their
        safetensors and ONNX files record them (both backends call this)."""
        if dn["latent_channels"] != ae["latent_channels"]:
            raise RuntimeModelError(f"the denoiser expects {dn['latent_channels']} latent channels, "
                                    f"the autoencoder makes {ae['latent_channels']}")
        return cls(
            sample_rate=int(ae["sample_rate"]), hop_length=int(ae["hop_length"]),
            latent_channels=int(ae["latent_channels"]), latent_rate_hz=float(ae["latent_rate_hz"]),
            latent_scale=float(ae["latent_scale"]), style_dim=int(dn["style_dim"]), sigma_min=float(dn["sigma_min"]),
            sigma_max=float(dn["sigma_max"]), sigma_data=float(dn["sigma_data"]), instruments=tuple(instruments),
            n_fft=int(ae["n_fft"]), stft_hop_length=int(ae["stft_hop_length"]),
            versions=dict(versions) | ({"few_step": few_step.version} if few_step else {}),
            guidance=dict(guidance), sampling=dict(sampling or DEFAULT_SAMPLING),
            style_space=str(dn.get("style_space", STATISTICS_SPACE)),
            latent_space=latent_space_of(ae.get("latent_space"), versions.get("autoencoder")),
            note_lowest_midi=_note_lowest_midi(ae), frame_inputs=frame_inputs(dn), few_step=few_step,
        )


FEW_STEP = "few_step"  # the sampler that runs the distilled denoiser (a request's ``sampler``)


@dataclass(frozen=True)
class FewStep:
    """A denoiser distilled from the full one (``training/distill.py``), loaded beside it: it runs ``steps`` steps
    of ``solver`` with the teacher's guidance built in (one pass a step), and is the default sampler for the
    instruments in ``default_for`` (where it measured as good as its teacher: its card)."""

    version: str | None
    steps: int
    solver: str
    default_for: tuple[str, ...] = ()


def few_step_of(teacher_config: dict, teacher_version: str | None, student_config: dict,
                student_version: str | None, what: str) -> FewStep:
    """The ``FewStep`` a distilled denoiser file records (``config.provenance``: ``distilled_from``, the teacher's
    version; ``sampling``: its steps, solver and ``few_step_for``); refused unless it has the teacher's config and
    was distilled from this teacher."""
    if {k: v for k, v in student_config.items() if k != "provenance"} != {
            k: v for k, v in teacher_config.items() if k != "provenance"}:
        raise RuntimeModelError(f"{what} is not a distillation of the denoiser beside it (their configs differ); "
                                "ship them together")
    provenance = student_config.get("provenance") or {}
    teacher = provenance.get("distilled_from")
    if teacher != teacher_version:
        raise RuntimeModelError(f"{what} was distilled from denoiser {teacher}, but the denoiser beside it is "
                                f"{teacher_version}; ship them together")
    sampling = sampling_of(student_config)
    return FewStep(student_version, sampling["steps"], sampling["sampler"],
                   tuple((provenance.get("sampling") or {}).get("few_step_for", ())))


# Diff-A-Riff's context and style scales, and the beat grid and harmony as trained, for files that name none
DEFAULT_GUIDANCE = {"cfg_context": 1.25, "cfg_style": 1.25, "cfg_tempo": 1.0, "cfg_chords": 1.0}
FRAME_GUIDANCE = {"grid": "cfg_tempo", "harmony": "cfg_chords"}  # each frame condition's scale, by its name above
# For files that name none (a distilled one names its own steps); candidates: the takes of a bass sampled by
# default, the one most in key with the context kept (engine.pipeline._takes)
DEFAULT_SAMPLING = {"steps": 30, "sampler": "dpmpp_2m", "candidates": 4}


def sampling_of(denoiser_config: dict) -> dict:
    """The default steps, sampler and bass takes a denoiser file records (``config.provenance.sampling``), else
    DEFAULT_SAMPLING's."""
    recorded = (denoiser_config.get("provenance") or {}).get("sampling") or {}
    return {"steps": int(recorded.get("steps", DEFAULT_SAMPLING["steps"])),
            "sampler": str(recorded.get("sampler", DEFAULT_SAMPLING["sampler"])),
            "candidates": int(recorded.get("candidates", DEFAULT_SAMPLING["candidates"]))}


def guidance_of(denoiser_config: dict) -> dict:
    """The default guidance scales a denoiser file records (``config.provenance.guidance``), else Diff-A-Riff's.

    ``{"cfg_context": c, "cfg_style": s, "cfg_tempo": t, "cfg_chords": h, "instruments": {"drums": {"cfg_context":
    c2}, ...}}``: the scales for every instrument, and those an instrument overrides (``guidance_for`` merges them).
    """
    recorded = (denoiser_config.get("provenance") or {}).get("guidance") or {}
    guidance = {key: float(recorded.get(key, value)) for key, value in DEFAULT_GUIDANCE.items()}
    guidance["instruments"] = {name: {key: float(value) for key, value in scales.items() if key in DEFAULT_GUIDANCE}
                               for name, scales in (recorded.get("instruments") or {}).items()}
    return guidance


def guidance_for(guidance: dict, instrument: str) -> dict[str, float]:
    """Every scale of DEFAULT_GUIDANCE for ``instrument`` from a ``guidance_of`` dict."""
    scales = {key: float(guidance.get(key, value)) for key, value in DEFAULT_GUIDANCE.items()}
    return scales | (guidance.get("instruments") or {}).get(instrument, {})


class Backend(Protocol):
    name: str
    contract: ModelContract

    def encode(self, audio: np.ndarray) -> np.ndarray: ...

    def decode(self, latents: np.ndarray, instrument: str | None = None) -> np.ndarray: ...

    def notes(self, latents: np.ndarray) -> np.ndarray: ...

    def denoise(self, x, sigma, context, context_mask, style, style_mask, instrument, *, few_step: bool = False,
                **frame) -> np.ndarray:
        """``frame``: a conditioned denoiser's ``grid``, ``grid_mask``, ``harmony``, ``harmony_mask``;
        ``few_step``: the distilled denoiser's estimate (``contract.few_step``)."""

    def step_sampler(self, constants: dict[str, np.ndarray], *,
                     few_step: bool = False) -> "StepGraphSampler | None": ...


# The ONNX autoencoder runs on windows of a long region: its spectra and activations stay this size whatever
# the region's length. Each window reaches CHUNK_CONTEXT_FRAMES further either side, beyond the autoencoder's
# receptive field, and only its middle is kept, so the joins are seamless.
CHUNK_LATENT_FRAMES = 1024  # about 48 s of audio
CHUNK_CONTEXT_FRAMES = 16


def in_windows(run, frames: int, per_frame: int, chunk_frames: int = CHUNK_LATENT_FRAMES,
               context_frames: int = CHUNK_CONTEXT_FRAMES) -> np.ndarray:
    """``run(start, stop)`` over latent-frame windows covering ``frames``, each reaching ``context_frames`` further
    either side; its outputs (``per_frame`` values a latent frame on the last axis) kept in the middle and joined."""
    joined = None  # allocated once the first window says the outputs' leading shape and dtype
    for keep_start in range(0, frames, chunk_frames):
        keep_stop = min(keep_start + chunk_frames, frames)
        start = max(0, keep_start - context_frames)
        out = run(start, min(frames, keep_stop + context_frames))
        if joined is None:
            joined = np.empty(out.shape[:-1] + (frames * per_frame,), out.dtype)
        joined[..., keep_start * per_frame:keep_stop * per_frame] = \
            out[..., (keep_start - start) * per_frame:(keep_stop - start) * per_frame]
    return joined


def _pad_to_hop(audio: np.ndarray, hop_length: int) -> np.ndarray:
    remainder = audio.shape[-1] % hop_length
    return np.pad(audio, ((0, 0), (0, hop_length - remainder))) if remainder else audio


# -- onnxruntime ------------------------------------------------------------------------------------------
def choose_providers(providers: list[str] | None = None) -> list[str]:
    """``providers`` if given, else CUDA when onnxruntime offers it, then CPU."""
    import onnxruntime as ort

    if providers:
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise RuntimeModelError(f"onnxruntime here offers {', '.join(ort.get_available_providers())}; "
                                    f"not {', '.join(missing)}")
        return list(providers)
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, as stored (strings), read through onnxruntime (no onnx package)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def _number(metadata: dict, key: str, path: Path):
    try:
        return json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError):
        raise RuntimeModelError(f"{path}: metadata has no valid {key!r}") from None


class StepGraphSampler:
    """Runs a sampler as ``guided_step.onnx`` evaluations, one ``run`` each, with the state kept on the device.

    ``constants`` holds the request's inputs that do not change between steps (the conditions, the
    guidance, the controls' known regions: every name of ``STEP_INPUTS`` but x, sigma, tie,
    coefficients, previous_x0 and step_start); they are copied to the device once. Through I/O
    binding each evaluation's outputs stay where the provider put them (GPU memory on CUDA) and are
    bound as the next evaluation's inputs; only the final latents come back to the host.
    """

    def __init__(self, session, constants: dict[str, np.ndarray], device: str = "cpu"):
        import onnxruntime as ort

        self.session, self.device = session, device
        self._value = lambda array, dtype=np.float32: ort.OrtValue.ortvalue_from_numpy(
            np.ascontiguousarray(array, dtype), device, 0)
        self.binding = session.io_binding()
        self._constants = {}  # the OrtValues must outlive the binding
        for name, array in constants.items():
            self._constants[name] = self._value(array, np.int64 if name in STEP_INT_INPUTS else np.float32)
            self.binding.bind_ortvalue_input(name, self._constants[name])

    def __call__(self, x: np.ndarray, sigmas: np.ndarray, sampler: str, *, release_sigma: float = float("inf"),
                 callback=None) -> np.ndarray:
        """The sample ``SAMPLERS[sampler](denoise, x, sigmas)`` gives, ``denoise`` being the graph's
        guided denoiser with its controls; the loop tie holds while ``sigma > release_sigma``.
        ``callback(step, total, None, None)``: the states stay on the device."""
        from backline.engine.sampling import solver_plan

        plan = solver_plan(sampler, sigmas)
        if not plan:
            return x
        scalars = [{"sigma": self._value([e.sigma]), "tie": self._value([1.0 if e.sigma > release_sigma else 0.0]),
                    "coefficients": self._value(e.coefficients)} for e in plan]
        state = self._value(x)
        previous_x0, step_start = self._value(np.zeros_like(x)), state
        total, step = sum(e.ends_step for e in plan), 0
        for evaluation, values in zip(plan, scalars):
            for name, value in (("x", state), ("previous_x0", previous_x0), ("step_start", step_start), *values.items()):
                self.binding.bind_ortvalue_input(name, value)
            for name in STEP_OUTPUTS:
                self.binding.bind_output(name, self.device, 0)
            self.session.run_with_iobinding(self.binding)
            state, previous_x0 = self.binding.get_outputs()
            if evaluation.ends_step:
                step_start = state
                if callback:
                    callback(step, total, None, None)
                step += 1
        return state.numpy()


def _note_lowest_midi(autoencoder_config: dict) -> int | None:
    return int(autoencoder_config["note_lowest_midi"]) if autoencoder_config.get("note_count", 0) > 0 else None


class OnnxBackend:
    """The exported graphs under onnxruntime; numpy in and out, no torch.

    ``step_graph`` (default True) samples through ``guided_step.onnx`` (``step_sampler``), one run per
    evaluation; False runs the pure numpy samplers over ``denoise`` (one ``denoiser.onnx`` call per
    evaluation, guidance and update in numpy).
    """

    name = "onnx"

    def __init__(self, onnx_dir: str | Path | None = None, *, providers: list[str] | None = None,
                 intra_op_threads: int | None = None, step_graph: bool = True, precision: str = "fp32",
                 chunk_frames: int = CHUNK_LATENT_FRAMES):
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else default_onnx_dir()
        self.precision = precision
        paths = {part: self.onnx_dir / filename for part, filename in onnx_files(precision).items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise RuntimeModelError(f"missing ONNX model files: {', '.join(missing)} (make them with `backline "
                                    f"export{' --int8' if precision == 'int8' else ''}`)")
        if (self.onnx_dir / NOTES_FILE).is_file():
            paths["notes"] = self.onnx_dir / NOTES_FILE
        few_step = {part: self.onnx_dir / name for part, name in FEW_STEP_FILES.items()}
        present = [path.is_file() for path in few_step.values()]
        if any(present) and not all(present):
            raise RuntimeModelError(f"{self.onnx_dir}: the few-step graphs come as a pair ({', '.join(FEW_STEP_FILES.values())}): "
                                    "export them again")
        if all(present):
            paths |= few_step
        if precision == "int8":  # its integer convolutions are CPU kernels: on CUDA they would run on the host
            if providers and "CUDAExecutionProvider" in providers:
                raise RuntimeModelError("int8 graphs run on the CPU provider only; use fp32 on CUDA")
            providers = providers or ["CPUExecutionProvider"]
        self.providers = choose_providers(providers)
        self.intra_op_threads = intra_op_threads
        self.paths = paths
        # the distilled denoiser's graphs load when a request first asks for them: most never do
        self.sessions = {part: self._load(part) for part in paths if part not in FEW_STEP_FILES}
        self.metadata = {part: dict(s.get_modelmeta().custom_metadata_map) for part, s in self.sessions.items()}
        self.metadata |= {part: read_metadata(paths[part]) for part in FEW_STEP_FILES if part in paths}
        self.contract = self._contract(paths)
        self.step_graph = bool(step_graph)
        self.chunk_frames = int(chunk_frames)  # latent frames the autoencoder's graphs see at once (module top)
        # the STFT pair around the autoencoder's graphs runs on the graphs' threads while they wait
        self.fft_workers = int(intra_op_threads) if intra_op_threads else (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def _load(self, part: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.intra_op_threads:
            options.intra_op_num_threads = int(self.intra_op_threads)
        # The autoencoder runs once per request on the whole region: an arena would keep its peak
        # (about 400 MiB more at 120 s); the denoiser runs every step at one shape and keeps it.
        options.enable_cpu_mem_arena = part in DENOISING_PARTS
        if part not in DENOISING_PARTS:  # numpy's STFT and pitch lock follow these graphs: no idle spinning
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.paths[part]), options, providers=self.providers)

    def _session(self, part: str):
        if part not in self.sessions:
            self.sessions[part] = self._load(part)
        return self.sessions[part]

    def _check_pair(self, step: str, denoiser: str, paths: dict[str, Path]) -> None:
        """A step graph must come from the very denoiser file its denoiser graph came from (config and version)."""
        key = lambda meta: (meta.get("config"), meta.get("backline_version"))
        if key(self.metadata[step]) != key(self.metadata[denoiser]):
            raise RuntimeModelError(f"{paths[step]} and {paths[denoiser]} come from different denoisers")

    def _contract(self, paths: dict[str, Path]) -> ModelContract:
        for part, meta in self.metadata.items():
            graph = GRAPH_NAMES[part]
            if meta.get("backline_onnx_contract") != ONNX_CONTRACT_VERSION or meta.get("backline_graph") != graph:
                raise RuntimeModelError(f"{paths[part]}: not a Backline {graph} graph "
                                        f"(contract {meta.get('backline_onnx_contract')!r}, graph {meta.get('backline_graph')!r})")
            precision = self.precision if part in INT8_FILES else "fp32"
            if meta.get("backline_precision", "fp32") != precision:
                raise RuntimeModelError(f"{paths[part]}: a {meta.get('backline_precision', 'fp32')} graph where "
                                        f"{precision} was asked for")
        encoder, decoder, denoiser = (self.metadata[p] for p in ("encoder", "decoder", "denoiser"))
        if encoder.get("config") != decoder.get("config"):
            raise RuntimeModelError(f"{paths['encoder']} and {paths['decoder']} come from different autoencoders")
        self._check_pair("step", "denoiser", paths)
        ae = json.loads(encoder["config"])
        dn = json.loads(denoiser["config"])
        few_step = None
        if "few_step_denoiser" in paths:
            self._check_pair("few_step_step", "few_step_denoiser", paths)
            student = self.metadata["few_step_denoiser"]
            few_step = few_step_of(dn, denoiser.get("backline_version"), json.loads(student["config"]),
                                   student.get("backline_version"), str(paths["few_step_denoiser"]))
        contract = ModelContract.from_configs(
            ae, dn, instruments=_number(denoiser, "instruments", paths["denoiser"]),
            versions={"autoencoder": encoder.get("backline_version"), "denoiser": denoiser.get("backline_version")},
            guidance=guidance_of(dn), sampling=sampling_of(dn), few_step=few_step)
        expected = list(denoiser_input_names(contract.frame_inputs))
        if json.loads(denoiser.get("inputs") or json.dumps(expected)) != expected:
            raise RuntimeModelError(f"{paths['denoiser']}: its inputs {denoiser.get('inputs')} are not those its config "
                                    f"asks for ({', '.join(expected)}): export it again")
        for name, meta, path in (("sample_rate", encoder, paths["encoder"]), ("latent_rate_hz", encoder, paths["encoder"]),
                                 ("latent_scale", encoder, paths["encoder"]), ("sigma_min", denoiser, paths["denoiser"]),
                                 ("sigma_max", denoiser, paths["denoiser"]), ("sigma_data", denoiser, paths["denoiser"])):
            recorded = float(_number(meta, name, path))
            if not np.isclose(recorded, getattr(contract, name), rtol=1e-9, atol=0):
                raise RuntimeModelError(f"{path}: its metadata says {name} {recorded}, its config "
                                        f"{getattr(contract, name)}: export it again")
        if ("notes" in paths) != (contract.note_lowest_midi is not None):
            raise RuntimeModelError(f"{self.onnx_dir}: the graphs ({NOTES_FILE} {'present' if 'notes' in paths else 'absent'}) "
                                    f"do not match its config's note head")
        if "notes" in paths and self.metadata["notes"].get("config") != encoder.get("config"):
            raise RuntimeModelError(f"{paths['notes']} and {paths['encoder']} come from different autoencoders")
        check_latent_space(str(paths["denoiser"]), (dn.get("provenance") or {}).get("autoencoder"), contract.latent_space)
        return contract

    def encode(self, audio: np.ndarray) -> np.ndarray:
        c = self.contract
        audio = np.asarray(audio, np.float32)

        def run(start: int, stop: int) -> np.ndarray:  # the last window padded to whole latent frames
            window = _pad_to_hop(audio[..., start * c.hop_length:stop * c.hop_length], c.hop_length)
            real, imag = stft(window, c.n_fft, c.stft_hop_length, workers=self.fft_workers)
            return self.sessions["encoder"].run(None, {"spec_real": real, "spec_imag": imag})[0]

        return in_windows(run, -(-audio.shape[-1] // c.hop_length), 1, self.chunk_frames)

    def decode(self, latents: np.ndarray, instrument: str | None = None) -> np.ndarray:
        c = self.contract
        latents = np.ascontiguousarray(latents, np.float32)
        per_latent = c.hop_length // c.stft_hop_length  # STFT frames per latent frame
        locked = instrument == "bass" and c.note_lowest_midi is not None
        if locked:  # the notes' phase runs across the windows: computed once for the whole region
            f0_hz = note_frequencies(self.notes(latents), c.note_lowest_midi)
            phase = note_phase(f0_hz, sample_rate=c.sample_rate, hop=c.stft_hop_length)

        def run(start: int, stop: int) -> np.ndarray:
            real, imag = self.sessions["decoder"].run(None, {"latents": latents[..., start:stop]})
            if locked:
                frames = slice(start * per_latent, stop * per_latent)
                real, imag = pitch_locked(real, imag, f0_hz[:, frames], sample_rate=c.sample_rate, n_fft=c.n_fft,
                                          hop=c.stft_hop_length, phase=phase[:, frames])
            return istft(real, imag, c.n_fft, c.stft_hop_length, workers=self.fft_workers)

        return in_windows(run, latents.shape[-1], c.hop_length, self.chunk_frames)

    def notes(self, latents: np.ndarray) -> np.ndarray:
        """Note logits (batch, classes, stft_frames) of the note head (``autoencoder_notes.onnx``)."""
        if self.contract.note_lowest_midi is None:
            raise RuntimeModelError("this autoencoder has no note head")
        latents = np.ascontiguousarray(latents, np.float32)
        run = lambda start, stop: self.sessions["notes"].run(None, {"latents": latents[..., start:stop]})[0]
        return in_windows(run, latents.shape[-1], self.contract.hop_length // self.contract.stft_hop_length,
                          self.chunk_frames)

    def denoise(self, x, sigma, context, context_mask, style, style_mask, instrument, *, few_step: bool = False,
                **frame) -> np.ndarray:
        values = (x, sigma, context, context_mask, style, style_mask)
        feeds = {name: np.ascontiguousarray(v, np.float32) for name, v in zip(DENOISER_INPUTS, values)}
        feeds |= {name: np.ascontiguousarray(frame[name], np.float32) for name in
                  frame_input_names(self.contract.frame_inputs)}
        feeds["instrument"] = np.ascontiguousarray(instrument, np.int64)
        return self._session(_part("denoiser", few_step)).run(None, feeds)[0]

    def step_sampler(self, constants: dict[str, np.ndarray], *, few_step: bool = False) -> StepGraphSampler | None:
        """A ``StepGraphSampler`` over this request's ``constants`` (the distilled denoiser's graph with
        ``few_step``), or None when ``step_graph`` is off."""
        if not self.step_graph:
            return None
        return StepGraphSampler(self._session(_part("step", few_step)), constants, self.device)


def _part(name: str, few_step: bool) -> str:
    return f"few_step_{name}" if few_step else name


STYLE_ENCODER_FILE = "style_encoder.onnx"  # written by `backline export` for a denoiser on a style tower


def onnx_audio_style(path: str | Path, style_space: str, *, providers: list[str] | None = None,
                     intra_op_threads: int | None = None):
    """``latents (C, frames) -> (style_dim,)`` through ``style_encoder.onnx``, which must make ``style_space``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = int(intra_op_threads)
    session = ort.InferenceSession(str(path), options, providers=choose_providers(providers))
    made = session.get_modelmeta().custom_metadata_map.get("style_space")
    if made != style_space:
        raise RuntimeModelError(f"{path} makes the style space {made!r}, the denoiser was trained on {style_space!r}; "
                                "export them together")

    def embed(latents: np.ndarray) -> np.ndarray:
        latents = np.asarray(latents, np.float32)
        if latents.ndim != 2 or latents.shape[1] == 0:
            raise ValueError(f"expected (channels, frames) latents with frames > 0, got shape {latents.shape}")
        return session.run(None, {"latents": latents[None]})[0][0]

    return embed


# -- torch ------------------------------------------------------------------------------------------------
class TorchBackend:
    """Today's torch modules behind the same interface (development, training checks, the export reference)."""

    name = "torch"

    def __init__(self, autoencoder, denoiser, versions: dict | None = None, guidance: dict | None = None,
                 sampling: dict | None = None, few_step_denoiser=None, few_step: FewStep | None = None):
        from backline.models.diffusion import INSTRUMENTS

        self.autoencoder, self.denoiser = autoencoder.eval(), denoiser.eval()
        self.few_step_denoiser = few_step_denoiser.eval() if few_step_denoiser is not None else None
        self.contract = ModelContract.from_configs(autoencoder.config.to_dict(), denoiser.config.to_dict(),
                                                   instruments=INSTRUMENTS, versions=dict(versions or {}),
                                                   guidance=dict(guidance or DEFAULT_GUIDANCE), sampling=sampling,
                                                   few_step=few_step)

    @classmethod
    def from_files(cls, autoencoder_path: str | Path, denoiser_path: str | Path,
                   few_step_path: str | Path | None = None) -> "TorchBackend":
        """The models of these files; ``few_step_path``: a denoiser distilled from ``denoiser_path``'s, for the
        "few_step" sampler."""
        from backline.models.autoencoder import load_autoencoder
        from backline.models.diffusion import load_denoiser

        autoencoder, ae_meta = load_autoencoder(autoencoder_path)
        denoiser, dn_meta = load_denoiser(denoiser_path)
        student = few_step = None
        if few_step_path is not None:
            student, student_meta = load_denoiser(few_step_path)
            few_step = few_step_of(dn_meta["config"], dn_meta.get("backline_version"), student_meta["config"],
                                   student_meta.get("backline_version"), str(few_step_path))
        backend = cls(autoencoder, denoiser, {"autoencoder": ae_meta.get("backline_version"),
                                              "denoiser": dn_meta.get("backline_version")},
                      guidance=guidance_of(dn_meta.get("config", {})), sampling=sampling_of(dn_meta.get("config", {})),
                      few_step_denoiser=student, few_step=few_step)
        check_latent_space(str(denoiser_path), (dn_meta["config"].get("provenance") or {}).get("autoencoder"),
                           backend.contract.latent_space)
        return backend

    def encode(self, audio: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.autoencoder.encode(torch.from_numpy(np.ascontiguousarray(audio, np.float32))).numpy()

    def decode(self, latents: np.ndarray, instrument: str | None = None) -> np.ndarray:
        import torch

        from backline.models.autoencoder import decode_pitch_locked

        x = torch.from_numpy(np.ascontiguousarray(latents, np.float32))
        if instrument == "bass" and self.contract.note_lowest_midi is not None:
            return decode_pitch_locked(self.autoencoder, x)
        with torch.inference_mode():
            return self.autoencoder.decode(x).numpy()

    def notes(self, latents: np.ndarray) -> np.ndarray:
        import torch

        if self.contract.note_lowest_midi is None:
            raise RuntimeModelError("this autoencoder has no note head")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(latents, np.float32)) / self.contract.latent_scale
            return self.autoencoder.decode_notes(x).numpy()

    def step_sampler(self, constants: dict[str, np.ndarray], *, few_step: bool = False) -> None:
        return None  # torch runs the numpy samplers over ``denoise``

    def denoise(self, x, sigma, context, context_mask, style, style_mask, instrument, *, few_step: bool = False,
                **frame) -> np.ndarray:
        import torch

        f = lambda v: torch.from_numpy(np.ascontiguousarray(v, np.float32))
        denoiser = self.few_step_denoiser if few_step else self.denoiser
        with torch.inference_mode():
            return denoiser(f(x), f(sigma), f(context), f(context_mask), f(style), f(style_mask),
                                 torch.from_numpy(np.ascontiguousarray(instrument, np.int64)),
                                 **{name: f(value) for name, value in frame.items()}).numpy()
