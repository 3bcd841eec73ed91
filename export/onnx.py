"""Torch models to ONNX, with the model contract in the graphs' metadata and a check that refuses bad files.

``export_models(autoencoder_path, denoiser_path, out_dir)`` writes the graphs that
``backline.engine.runtime.OnnxBackend`` loads:

    autoencoder_encoder.onnx   spec_real, spec_imag (batch, n_fft // 2 + 1, stft_frames) -> latents (batch, C, n)
    autoencoder_decoder.onnx   latents (batch, C, n) -> spec_real, spec_imag (batch, bins, n * frames_per_latent)
    autoencoder_notes.onnx     latents (batch, C, n) -> note_logits (batch, classes, n * frames_per_latent), only
                               for an autoencoder with a note head
    denoiser.onnx              x, sigma, context, context_mask, style, style_mask, instrument -> denoised
                               (the EDM-preconditioned denoiser; batch and frame axes dynamic, so the
                               engine's one to three guidance passes run as one call)
    guided_step.onnx           one sampler evaluation: the same denoiser over the guidance passes, their
                               combination, inpainting and loop tying, and the solver's linear update
                               (inputs ``runtime.STEP_INPUTS``) -> x_next, denoised; passes and frames dynamic
    few_step_denoiser.onnx, few_step_guided_step.onnx
                               the same two graphs of a denoiser distilled from this one (``few_step_path``),
                               for the engine's "few_step" sampler

The STFT and inverse STFT stay outside the graphs, in numpy (see ``engine/runtime.py`` for why).
Each file carries the safetensors metadata of the model it came from, unchanged (``backline_kind``,
``backline_version``, ``config``, ``sample_rate``, ``latent_rate_hz``, ``latent_channels``,
``latent_scale``), plus ``backline_onnx_contract``, ``backline_graph`` and, for the denoiser, the sigma
range, ``sigma_data``, ``style_dim`` and ``instruments``; for the autoencoder, ``spectral_frontend``.

Before anything is written, every graph is reloaded in onnxruntime and compared with torch, through
the same numpy code the engine runs, on fresh random inputs of several lengths (one frame, odd, long)
and batch sizes (noise and tones). The reference is the torch model in float64; each case reports the
largest absolute error, that error relative to the reference's peak, torch float32's own relative
error and the difference between onnxruntime and torch float32 (see ``TOLERANCE``). If any graph fails the tolerance, no file is written (the temporary files are
deleted) and ``ExportError`` carries the report; files already in ``out_dir`` are left as they were.

When the denoiser was trained on a learned style tower (``style_space`` ``style-tower:...``), the
style file that holds it is exported too (``style_path``; it must be that very tower):

    style_encoder.onnx         latents (batch, C, frames) -> style (batch, style_dim): the audio tower
    prompt_prior.onnx          text (batch, text_dim) -> style (batch, style_dim): the prompt prior with the
                               audio space's standardisation folded in (the text embedding itself comes
                               from all-MiniLM-L6-v2, which is not exported)

checked against the engine's NumPy forward (``engine/style.py``) on fresh inputs, with metadata
``backline_kind`` (``style``), ``backline_version``, ``style_space``, ``style_dim``, ``latent_channels``
and ``text_model``. A denoiser on latent statistics needs no style graph.
"""

from __future__ import annotations

import json
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backline.engine.runtime import (FEW_STEP_FILES, GRAPH_NAMES, INT8_FILES, NOTES_FILE, ONNX_CONTRACT_VERSION,
                                     ONNX_FILES, STEP_OUTPUTS, denoiser_input_names, istft, step_input_names, stft)
from backline.engine.sampling import GUIDANCE_RESCALE, combine_guidance, linear_update

OPSET = 17
# Largest |onnx - exact| relative to the exact output's peak, "exact" being torch in float64. A graph
# also passes when it is within twice torch float32's own error: near-silent STFT bins make the
# autoencoder's log features sensitive to float32 rounding (about 1e-3 on pure tones), and torch in
# float32 is no closer to the exact value there than onnxruntime is.
TOLERANCE = 1e-4
# The int8 graphs against the float ones (not against torch: int8 is not float32). Weights rounded to 256 levels and
# activations quantised per call put the denoiser's output a few percent of its peak away; this bound only refuses a
# broken quantisation. Whether the stems keep their quality is measured by `backline eval` (export/benchmarks).
INT8_TOLERANCE = 0.1


class ExportError(RuntimeError):
    """An export whose graphs do not match torch; ``report`` says by how much."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass
class ExportReport:
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    checks: dict[str, dict] = field(default_factory=dict)
    seed: int = 0

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "files": {k: str(v) for k, v in self.files.items()},
                "checks": self.checks, "seed": self.seed}


def _graphs():
    """The torch modules that are exported: the autoencoder between spectra and latents, and its note head
    (built lazily: torch)."""
    import torch
    from torch import nn

    class EncoderGraph(nn.Module):
        """``Autoencoder.encode`` after its STFT: spectrum -> scaled latents."""

        def __init__(self, autoencoder):
            super().__init__()
            self.ae = autoencoder

        def forward(self, spec_real, spec_imag):
            return self.ae.encode_spectrum(spec_real, spec_imag) * self.ae.config.latent_scale

    class DecoderGraph(nn.Module):
        """``Autoencoder.decode`` up to its inverse STFT: scaled latents -> spectrum."""

        def __init__(self, autoencoder):
            super().__init__()
            self.ae = autoencoder

        def forward(self, latents):
            return self.ae.decode_spectrum(latents / self.ae.config.latent_scale)

    class NotesGraph(nn.Module):
        """``Autoencoder.decode_notes`` on scaled latents: the notes of a bass (models/dsp.py)."""

        def __init__(self, autoencoder):
            super().__init__()
            self.ae = autoencoder

        def forward(self, latents):
            return self.ae.decode_notes(latents / self.ae.config.latent_scale)

    return EncoderGraph, DecoderGraph, NotesGraph


def _step_graph():
    """The torch module exported as ``guided_step.onnx`` (built lazily: torch).

    It mirrors, op for op, what the engine's numpy path does around ``denoiser.onnx`` (``check_step``
    compares the two through ``step_reference``):
    ``pipeline.make_guided_denoiser`` (the passes batched), ``sampling.guided`` (the combination and
    its rescale), ``controls.looping`` then ``controls.inpainting``, and the linear update of
    ``sampling.solver_plan``. Inputs that switch a control off make it exact identity (keep 0,
    tie 0, rescale 0 with one pass), so one graph serves every request.
    """
    import torch
    from torch import nn

    def spread(v):  # numpy's std over all but the batch axis (population)
        centred = v - v.mean(dim=(1, 2), keepdim=True)
        return (centred * centred).mean(dim=(1, 2), keepdim=True).sqrt()

    class GuidedStepGraph(nn.Module):
        def __init__(self, denoiser):
            super().__init__()
            self.denoiser = denoiser
            self.conditions = [name for name, _ in denoiser.config.frame_inputs]
            self.names = step_input_names(denoiser.config.frame_inputs)

        def forward(self, *inputs):  # runtime.step_input_names, in order
            i = dict(zip(self.names, inputs))
            x, context_mask = i["x"], i["context_mask"]
            # One row per take and guidance pass, take-major (as pipeline.make_guided_denoiser batches them);
            # broadcasting copies exactly.
            ones = torch.ones_like(x[:, 0, :1]) * torch.ones_like(context_mask)[None, :]  # (T, P)
            rows = ones.reshape(-1)  # (T * P,)
            per_row = lambda mask: (ones * mask[None, :]).reshape(-1)  # a pass's value in each take's row of it
            takes_rows = (x[:, None] * ones[:, :, None, None]).reshape(-1, x.shape[1], x.shape[2])
            frame = {name: i[name] * rows[:, None, None] for name in self.conditions} | {
                f"{name}_mask": per_row(i[f"{name}_mask"]) for name in self.conditions}
            out = self.denoiser(takes_rows, i["sigma"] * rows, i["context"] * rows[:, None, None], per_row(context_mask),
                                i["style"] * rows[:, None], per_row(i["style_mask"]), i["instrument"].expand_as(rows),
                                **frame)
            out = out.reshape(x.shape[0], -1, *out.shape[1:])  # (T, P, C, n)
            pick = lambda index: out.index_select(1, index).squeeze(1)
            pass_index, guidance = i["pass_index"], i["guidance"]
            none, conditional, full = (pick(pass_index[k:k + 1]) for k in range(3))
            without = [(i["frame_guidance"][k], pick(i["frame_pass_index"][k:k + 1]))  # a scale of 1 adds nothing
                       for k in range(len(self.conditions))]
            estimate = combine_guidance(none, conditional, full, guidance[0], guidance[1], guidance[2], spread=spread,
                                        floor=lambda v, m: torch.clamp(v, min=m), without=without)
            known, keep, loop_index, loop_counts, tie = (i[n] for n in ("known", "keep", "loop_index", "loop_counts",
                                                                         "tie"))
            index = loop_index.expand_as(estimate)
            sums = (torch.zeros_like(estimate[..., :1]) * loop_counts).scatter_add(2, index, estimate)
            tied = (sums / loop_counts).gather(2, index)
            estimate = torch.where(tie > 0, tied, estimate)
            estimate = keep * known + (1 - keep) * estimate
            return linear_update(i["coefficients"], x, estimate, i["previous_x0"], i["step_start"]), estimate

    class NamedInputs(nn.Module):
        """The denoiser with its inputs in ``runtime.denoiser_input_names`` order, as ``denoiser.onnx`` takes them."""

        def __init__(self, denoiser):
            super().__init__()
            self.denoiser = denoiser
            self.names = denoiser_input_names(denoiser.config.frame_inputs)

        def forward(self, *inputs):
            return self.denoiser(**dict(zip(self.names, inputs)))

    return GuidedStepGraph, NamedInputs


def step_inputs(config, passes: int, frames: int, rng: np.random.Generator, *, period: int | None = None,
                inpaint: bool = True, tie: bool = True, takes: int = 1) -> dict[str, np.ndarray]:
    """Random ``guided_step.onnx`` inputs: ``takes`` takes of ``passes`` guidance rows over ``frames`` latent frames."""
    sigma = float(np.exp(rng.uniform(np.log(config.sigma_min), np.log(config.sigma_max))))
    latents = lambda scale=1.0, batch=1: (rng.standard_normal((batch, config.latent_channels, frames)) * scale
                                          ).astype(np.float32)
    period = period or max(1, frames // 3)
    index = np.arange(frames) % period
    rows = {1: [0, 0, 0], 2: [0, 1, 1], 3: [0, 1, 2]}[passes]
    return {
        "x": latents(sigma, takes), "sigma": np.array([sigma], np.float32), "context": latents(),
        "context_mask": rng.integers(0, 2, passes).astype(np.float32),
        "style": rng.standard_normal((1, config.style_dim)).astype(np.float32),
        "style_mask": rng.integers(0, 2, passes).astype(np.float32),
        "instrument": rng.integers(0, 2, 1).astype(np.int64),
        "guidance": np.array([rng.uniform(0, 8), rng.uniform(0, 8), 0.0 if passes == 1 else GUIDANCE_RESCALE], np.float32),
        "pass_index": np.array(rows, np.int64),
        "known": latents(), "keep": (rng.uniform(0, 1, frames) if inpaint else np.zeros(frames)).astype(np.float32),
        "loop_index": index.astype(np.int64), "loop_counts": np.bincount(index, minlength=period).astype(np.float32),
        "tie": np.array([1.0 if tie else 0.0], np.float32),
        "coefficients": rng.uniform(-1.5, 1.5, 4).astype(np.float32),
        "previous_x0": latents(1.0, takes), "step_start": latents(sigma, takes),
    } | _frame_feeds(config, 1, frames, rng, masks=passes) | ({
        "frame_guidance": (np.ones(len(config.frame_inputs)) if passes == 1 else
                           rng.choice([1.0, 0.5, 2.5], len(config.frame_inputs))).astype(np.float32),
        "frame_pass_index": rng.integers(0, passes, len(config.frame_inputs)).astype(np.int64),
    } if config.frame_inputs else {})


def _frame_feeds(config, batch: int, frames: int, rng: np.random.Generator, *, masks: int) -> dict[str, np.ndarray]:
    """Random beat grids (sin and cos in [-1, 1]) and harmonies ([0, 1]) for a conditioned denoiser, with ``masks``
    random 0/1 masks each; nothing for an unconditioned one."""
    feeds = {}
    for name, channels in config.frame_inputs:
        low = -1.0 if name == "grid" else 0.0
        feeds[name] = rng.uniform(low, 1.0, (batch, channels, frames)).astype(np.float32)
        feeds[f"{name}_mask"] = rng.integers(0, 2, masks).astype(np.float32)
    return feeds


def raw_metadata(path: str | Path) -> dict[str, str]:
    """A safetensors model file's metadata exactly as stored (strings)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _torch_export(module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict,
                  opset: int) -> None:
    import torch

    with warnings.catch_warnings():
        # The TorchScript exporter: the torch.export one needs onnxscript, which the train extra lacks.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                              dynamic_axes=dynamic, opset_version=opset, dynamo=False, do_constant_folding=True)


FP16_STORAGE_MIN_ELEMENTS = 1024  # smaller tensors stay float32: the Cast would cost more than it saves


def store_weights_fp16(model) -> int:
    """Store each large float32 initializer that fp16 represents exactly as fp16, cast back at load.

    The shipped safetensors are fp16, so their weights round-trip exactly and the graph computes the
    same float32 values; only tensors that would change (e.g. folded constants) stay float32. The
    files halve in size; onnxruntime folds the Casts when it builds the session. Returns the count.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph, converted, casts = model.graph, 0, []
    for initializer in list(graph.initializer):
        if initializer.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(initializer)
        if values.size < FP16_STORAGE_MIN_ELEMENTS:
            continue
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            continue
        name = initializer.name
        graph.initializer.remove(initializer)
        graph.initializer.append(numpy_helper.from_array(half, name + "__fp16"))
        casts.append(helper.make_node("Cast", [name + "__fp16"], [name], to=TensorProto.FLOAT, name=name + "__cast"))
        converted += 1
    for node in reversed(casts):
        graph.node.insert(0, node)
    return converted


def _write_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    store_weights_fp16(model)
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    if got.shape != want.shape or not np.isfinite(got).all():
        return float("inf")
    return float(np.abs(got.astype(np.float64) - want).max()) / max(float(np.abs(want).max()), 1e-12)


def _case(got: np.ndarray, torch32: np.ndarray, exact: np.ndarray, tolerance: float, **what) -> dict:
    """One comparison. ``exact`` is torch in float64; the graph passes when its error against it is within
    ``tolerance`` or within twice torch float32's own error (the model's float32 conditioning)."""
    error = _relative(got, exact)
    torch_error = _relative(torch32, exact)
    return {**what, "shape": list(got.shape), "max_abs_error": float(np.abs(got.astype(np.float64) - exact).max())
            if got.shape == exact.shape else float("inf"), "max_rel_error": error,
            "torch_float32_rel_error": torch_error, "rel_difference_to_torch_float32": _relative(got, torch32),
            "passed": bool(error <= max(tolerance, 2 * torch_error))}


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _summary(cases: list[dict], tolerance: float) -> dict:
    return {"max_abs_error": max(c["max_abs_error"] for c in cases),
            "max_rel_error": max(c["max_rel_error"] for c in cases),
            "torch_float32_rel_error": max(c["torch_float32_rel_error"] for c in cases),
            "tolerance": tolerance, "passed": all(c["passed"] for c in cases), "cases": cases}


def _float64(module):
    import copy

    return copy.deepcopy(module).double().eval()


def _test_audio(rng: np.random.Generator, batch: int, samples: int, sample_rate: int) -> np.ndarray:
    """Half the rows white noise, half tones over quiet noise (near-silent bins test the log features)."""
    t = np.arange(samples) / sample_rate
    rows = []
    for row in range(batch):
        if row % 2:
            tone = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(40, 2000) * t + rng.uniform(0, 6.3))
                       for _ in range(3))
            rows.append(tone + 1e-3 * rng.standard_normal(samples))
        else:
            rows.append(0.3 * rng.standard_normal(samples))
    return np.stack(rows).astype(np.float32)


def check_autoencoder(autoencoder, encoder_path: Path, decoder_path: Path, *, rng: np.random.Generator,
                      tolerance: float = TOLERANCE, threads: int | None = None,
                      notes_path: Path | None = None) -> dict[str, dict]:
    """Compare the autoencoder graphs (with the numpy STFT pair; the note head's when given) with ``autoencoder``
    on random inputs."""
    import torch

    c = autoencoder.config
    exact_model = _float64(autoencoder)
    encoder, decoder = _session(encoder_path, threads), _session(decoder_path, threads)
    notes = _session(notes_path, threads) if notes_path is not None else None
    encoder_cases, decoder_cases, note_cases = [], [], []
    for batch, samples in ((1, 1), (2, 3 * c.hop_length + 17), (2, 61 * c.hop_length + 5)):
        audio = _test_audio(rng, batch, samples, c.sample_rate)
        with torch.inference_mode():
            torch32 = autoencoder.encode(torch.from_numpy(audio)).numpy()
            exact = exact_model.encode(torch.from_numpy(audio).double()).numpy()
        padded = np.pad(audio, ((0, 0), (0, (-samples) % c.hop_length)))
        real, imag = stft(padded, c.n_fft, c.stft_hop_length)
        got = encoder.run(None, {"spec_real": real, "spec_imag": imag})[0]
        encoder_cases.append(_case(got, torch32, exact, tolerance, batch=batch, samples=samples))
    for batch, frames in ((1, 1), (2, 7), (1, 61)):
        latents = rng.standard_normal((batch, c.latent_channels, frames)).astype(np.float32)
        with torch.inference_mode():
            torch32 = autoencoder.decode(torch.from_numpy(latents)).numpy()
            exact = exact_model.decode(torch.from_numpy(latents).double()).numpy()
        real, imag = decoder.run(None, {"latents": latents})
        got = istft(real, imag, c.n_fft, c.stft_hop_length)
        decoder_cases.append(_case(got, torch32, exact, tolerance, batch=batch, latent_frames=frames))
        if notes is not None:
            unscaled = torch.from_numpy(latents) / c.latent_scale
            with torch.inference_mode():
                torch32 = autoencoder.decode_notes(unscaled).numpy()
                exact = exact_model.decode_notes(unscaled.double()).numpy()
            got = notes.run(None, {"latents": latents})[0]
            note_cases.append(_case(got, torch32, exact, tolerance, batch=batch, latent_frames=frames))
    checks = {"encoder": _summary(encoder_cases, tolerance), "decoder": _summary(decoder_cases, tolerance)}
    if note_cases:
        checks["notes"] = _summary(note_cases, tolerance)
    return checks


def denoiser_inputs(config, batch: int, frames: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random denoiser inputs: sigmas log-uniform over the model's range, masks and instruments mixed."""
    log_sigma = rng.uniform(np.log(config.sigma_min), np.log(config.sigma_max), batch)
    return {
        "x": rng.standard_normal((batch, config.latent_channels, frames)).astype(np.float32) * np.exp(log_sigma)[:, None, None].astype(np.float32),
        "sigma": np.exp(log_sigma).astype(np.float32),
        "context": rng.standard_normal((batch, config.latent_channels, frames)).astype(np.float32),
        "context_mask": rng.integers(0, 2, batch).astype(np.float32),
        "style": rng.standard_normal((batch, config.style_dim)).astype(np.float32),
        "style_mask": rng.integers(0, 2, batch).astype(np.float32),
        "instrument": rng.integers(0, 2, batch).astype(np.int64),
    } | _frame_feeds(config, batch, frames, rng, masks=batch)


def check_denoiser(denoiser, path: Path, *, rng: np.random.Generator, tolerance: float = TOLERANCE,
                   threads: int | None = None) -> dict:
    """Compare the denoiser graph with ``denoiser`` on random inputs of several batch sizes and lengths."""
    import torch

    session = _session(path, threads)
    exact_model = _float64(denoiser)
    cases = []
    for batch, frames in ((1, 1), (3, 7), (2, 2 * denoiser.config.downsampling + 3), (3, 61)):
        feeds = denoiser_inputs(denoiser.config, batch, frames, rng)
        tensors = {name: torch.from_numpy(value) for name, value in feeds.items()}
        with torch.inference_mode():
            torch32 = denoiser(**tensors).numpy()
            exact = exact_model(**{n: t.double() if t.is_floating_point() else t for n, t in tensors.items()}).numpy()
        got = session.run(None, feeds)[0]
        cases.append(_case(got, torch32, exact, tolerance, batch=batch, latent_frames=frames))
    return _summary(cases, tolerance)


def step_reference(denoiser, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What the engine's numpy path computes for one ``guided_step.onnx`` evaluation, around ``denoiser``
    (a torch module, float32 or float64): the passes batched, ``sampling.guided``, ``controls.tie``,
    the inpainting blend and the linear update, each take on its own. Returns (x_next, denoised) in the module's
    precision."""
    per_take = [_take_reference(denoiser, feeds | {name: feeds[name][t:t + 1] for name in ("x", "previous_x0",
                                                                                         "step_start")})
                for t in range(len(feeds["x"]))]
    return tuple(np.concatenate(parts) for parts in zip(*per_take))


def _take_reference(denoiser, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from backline.engine.controls import tie
    from backline.engine.sampling import guided

    dtype = next(denoiser.parameters()).dtype
    passes = len(feeds["context_mask"])
    as_torch = lambda name, rows: torch.from_numpy(np.repeat(feeds[name], rows, axis=0)).to(dtype)
    conditions = [name for name, _ in denoiser.config.frame_inputs]
    frame = {name: as_torch(name, passes) for name in conditions} | {
        f"{name}_mask": torch.from_numpy(feeds[f"{name}_mask"]).to(dtype) for name in conditions}
    with torch.inference_mode():
        out = denoiser(as_torch("x", passes), as_torch("sigma", passes), as_torch("context", passes),
                       torch.from_numpy(feeds["context_mask"]).to(dtype), as_torch("style", passes),
                       torch.from_numpy(feeds["style_mask"]).to(dtype),
                       torch.from_numpy(np.repeat(feeds["instrument"], passes)), **frame).numpy()
    none, context, full = (out[i][None] for i in feeds["pass_index"])
    cfg_context, cfg_style, rescale = (float(v) for v in feeds["guidance"])
    predictions = {"none": none, "context": context, "full": full} | {
        f"without_{name}": out[feeds["frame_pass_index"][k]][None] for k, name in enumerate(conditions)}
    scales = {name: float(feeds["frame_guidance"][k]) for k, name in enumerate(conditions)}
    estimate = full if passes == 1 else guided(predictions, cfg_context=cfg_context, cfg_style=cfg_style,
                                               rescale=rescale, frame_scales=scales)
    if feeds["tie"][0] > 0:
        estimate = tie(estimate, len(feeds["loop_counts"]))
    keep = feeds["keep"].astype(out.dtype)
    estimate = keep * feeds["known"].astype(out.dtype) + (1 - keep) * estimate
    a, b, c, e = (float(v) for v in feeds["coefficients"])
    x_next = a * feeds["x"] + b * estimate + c * feeds["previous_x0"] + e * feeds["step_start"]
    return x_next.astype(out.dtype), estimate


def check_step(denoiser, path: Path, *, rng: np.random.Generator, tolerance: float = TOLERANCE,
               threads: int | None = None) -> dict:
    """Compare ``guided_step.onnx`` with ``step_reference`` (the torch denoiser and the engine's numpy
    guidance, controls and update) on random inputs: one to three passes, one frame to long, controls
    on and off. Both outputs are compared (x_next and the estimate)."""
    exact_model = _float64(denoiser)
    session = _session(path, threads)
    cases = []
    for passes, frames, controls, takes in ((1, 1, False, 1), (2, 7, True, 3), (3, 2 * denoiser.config.downsampling + 3,
                                                                             False, 1), (3, 61, True, 4)):
        feeds = step_inputs(denoiser.config, passes, frames, rng, inpaint=controls, tie=controls, takes=takes)
        torch32, exact = step_reference(denoiser, feeds), step_reference(exact_model, feeds)
        got = session.run(list(STEP_OUTPUTS), feeds)
        for output, g, t32, ex in zip(STEP_OUTPUTS, got, torch32, exact):
            cases.append(_case(g, t32, ex, tolerance, output=output, passes=passes, latent_frames=frames,
                               controls=controls, takes=takes))
    return _summary(cases, tolerance)


def restore_weights_fp32(model) -> int:
    """Undo ``store_weights_fp16``: each fp16 initializer cast to float32 becomes a float32 initializer again (the
    quantiser looks for float weights feeding the convolutions). Returns the count."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    halves = {i.name: i for i in graph.initializer if i.data_type == TensorProto.FLOAT16}
    casts = [n for n in graph.node if n.op_type == "Cast" and n.input[0] in halves
             and any(a.name == "to" and a.i == TensorProto.FLOAT for a in n.attribute)]
    for node in casts:
        half = halves[node.input[0]]
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(half).astype(np.float32), node.output[0]))
        graph.node.remove(node)
        graph.initializer.remove(half)
    return len(casts)


def quantize_int8(float_path: Path, int8_path: Path) -> None:
    """Write the graph at ``float_path`` with int8 weights and dynamically quantised activations in its
    convolutions (onnxruntime's dynamic quantisation; unsigned 8-bit weights, which ran faster than signed
    ones on this x86 CPU; the dense layers stay float), keeping its metadata and adding
    ``backline_precision=int8``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(float_path))
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    restore_weights_fp32(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "please run pre-processing": shape inference, which the graphs do not need
        quantize_dynamic(model, int8_path, op_types_to_quantize=["Conv"],
                         weight_type=QuantType.QUInt8)
    _write_metadata(int8_path, {**metadata, "backline_precision": "int8"})


def check_int8(config, float_paths: dict[str, Path], int8_paths: dict[str, Path], *, rng: np.random.Generator,
               threads: int | None = None) -> dict[str, dict]:
    """Compare each int8 graph with its float graph on random inputs of several lengths (``INT8_TOLERANCE``)."""
    inputs = {"denoiser": [denoiser_inputs(config, batch, frames, rng) for batch, frames in ((1, 7), (3, 61))],
              "step": [step_inputs(config, passes, frames, rng, inpaint=controls, tie=controls)
                       for passes, frames, controls in ((2, 7, True), (3, 61, False))]}
    checks = {}
    for part, feeds_list in inputs.items():
        want_session, got_session = _session(float_paths[part], threads), _session(int8_paths[part], threads)
        cases = []
        for feeds in feeds_list:
            for output, got, want in zip([o.name for o in want_session.get_outputs()], got_session.run(None, feeds),
                                         want_session.run(None, feeds)):
                cases.append({"output": output, "shape": list(got.shape), "max_rel_error": _relative(got, want),
                              "rel_l2_error": float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12))})
        checks[f"{part}_int8"] = {"against": "the float graph", "tolerance": INT8_TOLERANCE,
                                  "max_rel_error": max(c["max_rel_error"] for c in cases),
                                  "passed": all(c["max_rel_error"] <= INT8_TOLERANCE for c in cases), "cases": cases}
    return checks


def _export_denoiser(denoiser, denoiser_path: Path, path: Path, step_path: Path, opset: int) -> None:
    """The denoiser's graph and its step graph (``guided_step.onnx``), each with its metadata."""
    import torch

    d = denoiser.config
    GuidedStepGraph, NamedInputs = _step_graph()
    names, conditions = denoiser_input_names(d.frame_inputs), [name for name, _ in d.frame_inputs]
    example = denoiser_inputs(d, 3, 2 * d.downsampling + 1, np.random.default_rng(0))
    dynamic = {name: {0: "batch"} for name in names} | {
        name: {0: "batch", 2: "latent_frames"} for name in ("x", "context", "denoised", *conditions)}
    _torch_export(NamedInputs(denoiser), tuple(torch.from_numpy(example[n]) for n in names), path,
                  list(names), ["denoised"], dynamic, opset)
    _write_metadata(path, denoiser_metadata(raw_metadata(denoiser_path), d))
    step = step_inputs(d, 3, 2 * d.downsampling + 1, np.random.default_rng(0), takes=2)
    step_names = step_input_names(d.frame_inputs)
    step_dynamic = {name: {2: "latent_frames"} for name in ("context", "known", *conditions)} | {
        name: {0: "takes", 2: "latent_frames"} for name in ("x", "previous_x0", "step_start", "x_next", "denoised")} | {
        "context_mask": {0: "passes"}, "style_mask": {0: "passes"}, "keep": {0: "latent_frames"},
        "loop_index": {0: "latent_frames"}, "loop_counts": {0: "loop_period"}} | {
        f"{name}_mask": {0: "passes"} for name in conditions}
    _torch_export(GuidedStepGraph(denoiser).eval(), tuple(torch.from_numpy(step[n]) for n in step_names),
                  step_path, list(step_names), list(STEP_OUTPUTS), step_dynamic, opset)
    _write_metadata(step_path, step_metadata(raw_metadata(denoiser_path), d))


def step_metadata(safetensors_metadata: dict[str, str], config) -> dict[str, str]:
    """The denoiser's metadata, plus what the step graph computes and takes."""
    solver = {"update": "x_next = a * x + b * denoised + c * previous_x0 + e * step_start",
              "coefficients": "backline.engine.sampling.solver_plan (euler, heun, dpmpp_2m)",
              "guidance": "D_none + cfg_context (D_context - D_none) + cfg_style (D_full - D_context), "
                          "std rescaled towards D_full by rescale",
              "controls": "tie: the estimate averaged over loop_index places; then keep * known + (1 - keep) * estimate"}
    return {**denoiser_metadata(safetensors_metadata, config), "backline_graph": GRAPH_NAMES["step"],
            "inputs": json.dumps(list(step_input_names(config.frame_inputs))), "outputs": json.dumps(list(STEP_OUTPUTS)),
            "step": json.dumps(solver, sort_keys=True)}


def autoencoder_metadata(safetensors_metadata: dict[str, str], config, graph: str) -> dict[str, str]:
    frontend = {"transform": "stft", "n_fft": config.n_fft, "hop_length": config.stft_hop_length,
                "window": "hann_periodic", "padding": "same", "normalisation": "overlap_add_window_squared",
                "audio_padding": f"zeros to a multiple of {config.hop_length} samples"}
    return {**safetensors_metadata, "backline_onnx_contract": ONNX_CONTRACT_VERSION, "backline_graph": graph,
            "hop_length": json.dumps(config.hop_length), "spectral_frontend": json.dumps(frontend, sort_keys=True)}


def denoiser_metadata(safetensors_metadata: dict[str, str], config) -> dict[str, str]:
    from backline.models.diffusion import INSTRUMENTS

    return {**safetensors_metadata, "backline_onnx_contract": ONNX_CONTRACT_VERSION, "backline_graph": "denoiser",
            "sigma_min": json.dumps(config.sigma_min), "sigma_max": json.dumps(config.sigma_max),
            "sigma_data": json.dumps(config.sigma_data), "style_dim": json.dumps(config.style_dim),
            "instruments": json.dumps(list(INSTRUMENTS)),
            "inputs": json.dumps(list(denoiser_input_names(config.frame_inputs)))}


STYLE_FILES = {"style_encoder": "style_encoder.onnx", "prompt_prior": "prompt_prior.onnx"}


def _style_graphs(prior):
    """Torch modules of a style file's tower and prior (with its standardisation), from its weights."""
    import torch

    from backline.engine.style import HYBRID_SPACE_PREFIX
    from backline.models.style import Prior, tower_from_weights

    w = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in prior.weights.items()}
    tower = tower_from_weights(prior.weights)

    class HybridGraph(torch.nn.Module):  # the tower's numbers, then the latents' mean and std over time
        def __init__(self):
            super().__init__()
            self.tower = tower

        def forward(self, latents):
            return torch.cat([self.tower(latents), latents.mean(dim=-1), latents.std(dim=-1, unbiased=False)], dim=-1)

    if prior.audio_space.startswith(HYBRID_SPACE_PREFIX):
        tower = HybridGraph()
    mapping = Prior(w["layers.0.weight"].shape[1], w["layers.2.weight"].shape[0], w["layers.0.weight"].shape[0])
    mapping.load_state_dict({k: v for k, v in w.items() if k.startswith("layers.")})

    class PriorGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.prior = mapping
            self.register_buffer("mean", torch.from_numpy(prior.mean))
            self.register_buffer("std", torch.from_numpy(prior.std))

        def forward(self, text):
            return self.prior(text) * self.std + self.mean

    return tower.eval(), PriorGraph().eval()


def check_style(prior, encoder_path: Path, prior_path: Path, *, rng: np.random.Generator, tolerance: float = TOLERANCE,
                threads: int | None = None) -> dict[str, dict]:
    """The style graphs against the engine's NumPy forward (float32: the reference here), at 1, odd and long
    frame counts."""
    from backline.engine.style import prior_forward

    channels = prior.weights["tower.frame.0.weight"].shape[1] // 3
    encoder, mapping = _session(encoder_path, threads), _session(prior_path, threads)
    cases_encoder, cases_prior = [], []
    for batch, frames in ((1, 1), (2, 37), (1, 400)):
        latents = rng.standard_normal((batch, channels, frames)).astype(np.float32)
        want = np.stack([prior.audio_embedding(item) for item in latents]).astype(np.float64)
        got = encoder.run(None, {"latents": latents})[0]
        cases_encoder.append(_case(got, want.astype(np.float32), want, tolerance, batch=batch, frames=frames))
    for batch in (1, 5):
        text = rng.standard_normal((batch, prior.weights["layers.0.weight"].shape[1])).astype(np.float32)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
        want = (prior_forward(prior.weights, text) * prior.std + prior.mean).astype(np.float64)
        got = mapping.run(None, {"text": text})[0]
        cases_prior.append(_case(got, want.astype(np.float32), want, tolerance, batch=batch))
    return {"style_encoder": _summary(cases_encoder, tolerance), "prompt_prior": _summary(cases_prior, tolerance)}


def _export_style(style_path: Path, temporary: dict[str, Path], latent_channels: int, style_space: str,
                  opset: int) -> object:
    """Write the style graphs of ``style_path`` (whose tower must be ``style_space``) to ``temporary``."""
    import torch

    from backline.engine.style import TEXT_MODEL, PromptPrior

    prior = PromptPrior.load(style_path)
    if prior.audio_space != style_space:
        raise ValueError(f"{style_path}: its audio tower ({prior.audio_space}) is not the one the denoiser was trained "
                         f"with ({style_space})")
    tower, mapping = _style_graphs(prior)
    reads = prior.weights["tower.frame.0.weight"].shape[1] // 3
    if reads != latent_channels:
        raise ValueError(f"{style_path}: its tower reads {reads} latent channels, the autoencoder makes {latent_channels}")
    _torch_export(tower, (torch.randn(2, latent_channels, 9),), temporary["style_encoder"], ["latents"], ["style"],
                  {"latents": {0: "batch", 2: "latent_frames"}, "style": {0: "batch"}}, opset)
    _torch_export(mapping, (torch.randn(2, mapping.prior.layers[0].in_features),), temporary["prompt_prior"],
                  ["text"], ["style"], {"text": {0: "batch"}, "style": {0: "batch"}}, opset)
    common = {"backline_kind": "style", "backline_version": str(prior.metadata.get("version")),
              "backline_onnx_contract": ONNX_CONTRACT_VERSION, "style_space": style_space,
              "style_dim": json.dumps(prior.style_dim), "latent_channels": json.dumps(latent_channels),
              "text_model": prior.metadata.get("text_model", TEXT_MODEL)}
    _write_metadata(temporary["style_encoder"], common | {"backline_graph": "style_encoder"})
    _write_metadata(temporary["prompt_prior"], common | {"backline_graph": "prompt_prior"})
    return prior


def export_models(autoencoder_path: str | Path, denoiser_path: str | Path, out_dir: str | Path, *,
                  opset: int = OPSET, tolerance: float = TOLERANCE, seed: int | None = None,
                  threads: int | None = None, style_path: str | Path | None = None, int8: bool = False,
                  few_step_path: str | Path | None = None) -> ExportReport:
    """Export, check and (only if every graph passes) write the four graphs to ``out_dir`` (five with an autoencoder's note head), and the two
    style graphs when the denoiser was trained on a style tower (from ``style_path``, default the
    shipped style file); with ``int8``, also the denoiser's and the step graph's int8 versions
    (``quantize_int8``, checked against the float graphs by ``check_int8``); with ``few_step_path``, a denoiser
    distilled from this one (``engine.runtime.few_step_of`` must accept the pair), its two graphs as
    ``FEW_STEP_FILES``."""
    import torch

    from backline.engine.runtime import few_step_of
    from backline.models.autoencoder import load_autoencoder
    from backline.models.diffusion import load_denoiser

    autoencoder, _ = load_autoencoder(autoencoder_path)
    denoiser, denoiser_meta = load_denoiser(denoiser_path)
    student = None
    if few_step_path is not None:
        student, student_meta = load_denoiser(few_step_path)
        few_step_of(denoiser_meta["config"], denoiser_meta.get("backline_version"), student_meta["config"],
                    student_meta.get("backline_version"), str(few_step_path))
    if denoiser.config.latent_channels != autoencoder.config.latent_channels:
        raise ValueError(f"the denoiser expects {denoiser.config.latent_channels} latent channels, "
                         f"the autoencoder makes {autoencoder.config.latent_channels}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = secrets.randbits(32) if seed is None else seed
    report = ExportReport(out_dir, seed=seed)
    from backline.engine.style import DEFAULT_PRIOR_PATH
    from backline.models.style_space import STATISTICS_SPACE

    files = dict(ONNX_FILES)
    with_style = denoiser.config.style_space != STATISTICS_SPACE
    if with_style:
        files |= STYLE_FILES
    with_notes = autoencoder.config.note_count > 0
    if with_notes:
        files["notes"] = NOTES_FILE
    if int8:
        files |= {f"{part}_int8": name for part, name in INT8_FILES.items()}
    if student is not None:
        files |= FEW_STEP_FILES
    temporary = {part: out_dir / f".{name}.partial" for part, name in files.items()}
    try:
        c = autoencoder.config
        EncoderGraph, DecoderGraph, NotesGraph = _graphs()
        stft_frames = 2 * c.frames_per_latent
        bins = c.n_fft // 2 + 1
        _torch_export(EncoderGraph(autoencoder), (torch.randn(2, bins, stft_frames), torch.randn(2, bins, stft_frames)),
                      temporary["encoder"], ["spec_real", "spec_imag"], ["latents"],
                      {"spec_real": {0: "batch", 2: "stft_frames"}, "spec_imag": {0: "batch", 2: "stft_frames"},
                       "latents": {0: "batch", 2: "latent_frames"}}, opset)
        _torch_export(DecoderGraph(autoencoder), (torch.randn(2, c.latent_channels, 3),), temporary["decoder"],
                      ["latents"], ["spec_real", "spec_imag"],
                      {"latents": {0: "batch", 2: "latent_frames"}, "spec_real": {0: "batch", 2: "stft_frames"},
                       "spec_imag": {0: "batch", 2: "stft_frames"}}, opset)
        ae_meta = raw_metadata(autoencoder_path)
        _write_metadata(temporary["encoder"], autoencoder_metadata(ae_meta, c, "encoder"))
        _write_metadata(temporary["decoder"], autoencoder_metadata(ae_meta, c, "decoder"))
        if with_notes:
            _torch_export(NotesGraph(autoencoder), (torch.randn(2, c.latent_channels, 3),), temporary["notes"],
                          ["latents"], ["note_logits"], {"latents": {0: "batch", 2: "latent_frames"},
                                                         "note_logits": {0: "batch", 2: "stft_frames"}}, opset)
            _write_metadata(temporary["notes"], autoencoder_metadata(ae_meta, c, "notes"))

        d = denoiser.config
        _export_denoiser(denoiser, denoiser_path, temporary["denoiser"], temporary["step"], opset)
        if student is not None:
            _export_denoiser(student, few_step_path, temporary["few_step_denoiser"], temporary["few_step_step"], opset)
        if with_style:
            style = _export_style(Path(style_path or DEFAULT_PRIOR_PATH), temporary, c.latent_channels,
                                  d.style_space, opset)

        rng = np.random.default_rng(seed)
        report.checks.update(check_autoencoder(autoencoder, temporary["encoder"], temporary["decoder"], rng=rng,
                                               tolerance=tolerance, threads=threads,
                                               notes_path=temporary["notes"] if with_notes else None))
        report.checks["denoiser"] = check_denoiser(denoiser, temporary["denoiser"], rng=rng, tolerance=tolerance,
                                                   threads=threads)
        report.checks["step"] = check_step(denoiser, temporary["step"], rng=rng, tolerance=tolerance, threads=threads)
        if student is not None:
            report.checks["few_step_denoiser"] = check_denoiser(student, temporary["few_step_denoiser"], rng=rng,
                                                                tolerance=tolerance, threads=threads)
            report.checks["few_step_step"] = check_step(student, temporary["few_step_step"], rng=rng,
                                                        tolerance=tolerance, threads=threads)
        if with_style:
            report.checks.update(check_style(style, temporary["style_encoder"], temporary["prompt_prior"], rng=rng,
                                             tolerance=tolerance, threads=threads))
        if int8:
            for part in INT8_FILES:
                quantize_int8(temporary[part], temporary[f"{part}_int8"])
            report.checks.update(check_int8(d, temporary, {part: temporary[f"{part}_int8"] for part in INT8_FILES},
                                            rng=rng, threads=threads))
        failed = [part for part, check in report.checks.items() if not check["passed"]]
        if failed:
            details = ", ".join(f"{part}: max relative error {report.checks[part]['max_rel_error']:.3g}" for part in failed)
            raise ExportError(f"ONNX export refused, the graphs differ from torch beyond {tolerance:g} ({details}); "
                              f"nothing was written to {out_dir}", report.to_dict())
        for part, name in files.items():
            temporary[part].replace(out_dir / name)
            report.files[part] = out_dir / name
        if not with_style:  # graphs of an earlier style tower would not belong to this denoiser
            for name in STYLE_FILES.values():
                (out_dir / name).unlink(missing_ok=True)
        if not with_notes:  # nor the note head of an earlier autoencoder
            (out_dir / NOTES_FILE).unlink(missing_ok=True)
        if not int8:  # nor int8 graphs quantised from an earlier denoiser
            for name in INT8_FILES.values():
                (out_dir / name).unlink(missing_ok=True)
        if student is None:  # nor a student of an earlier denoiser
            for name in FEW_STEP_FILES.values():
                (out_dir / name).unlink(missing_ok=True)
        return report
    finally:
        for path in temporary.values():
            path.unlink(missing_ok=True)
