"""Generation speed and memory for each runtime backend: ``backline bench generate`` (or ``python -m backline.export.bench``).

For every backend and region length it starts a fresh process that loads the models and generates
one stem with the request's defaults (the denoiser file's steps and sampler unless ``--steps``: 30 steps of
DPM-Solver++(2M) for a file that names none; its guidance with a style reference, so three guidance passes per step
for a guided model, one for a distilled one). The backends: ``torch``; ``onnx``, the engine's
default (the sampler step as one ``guided_step.onnx`` run, state kept in onnxruntime through I/O
binding); ``onnx-calls`` (one ``denoiser.onnx`` call per step, guidance and update in numpy). Reported:

    process seconds      the child's whole life: interpreter, imports, model load, generation (and
                         the denoiser timing loop)
    generate_seconds     ``generate`` alone (encode, sample, decode, resample), the first after loading
    warm_generate_seconds  the same request again (a warm engine: the server with its models loaded and run)
    warm_one_take_seconds  one take of it (``candidates=1``), warm
    realtime_factor      seconds of audio per second of ``generate`` (above 1 is faster than real time)
    takes                bass takes sampled (the engine's default for a bass; each is a whole sampling)
    step_ms              sampling time per diffusion step of one take (denoiser call + guidance + solver update)
    denoiser_call_ms     median of five warm batched denoiser calls at the region's latent length

    command_seconds      (onnx) ``backline generate`` on the region as a WAV file, a fresh process: a producer's
                         whole wait at the command line (defaults, no style)
    peak_rss_mib         the child's peak resident memory over its three generations (VmHWM; the allocator
                         tuned as ``backline serve`` tunes it; the denoiser timing loop after them not counted)

and, with the backends loaded in one process and called alternately (so all see the same machine
load), the median batched denoiser call of torch and onnxruntime, the median encode and decode of
the region, and the median time per step of a whole 30-step sampling through the step graph and
through the per-call path.

The onnx child runs with ``import torch`` blocked, as on an install without the train extra. Model
files: the ones given, else the shipped ones, else random weights of ``--config`` (timing does not
depend on the weights); the ONNX graphs are exported (and checked) first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backline.engine.cli import add_threads_argument


# name -> how it samples: through the step graph or one denoiser call per step, and at which precision
ONNX_BACKENDS = {"onnx": {"step_graph": True}, "onnx-calls": {"step_graph": False},
                 "onnx-int8": {"step_graph": True, "precision": "int8"}}


def _song(sample_rate: int, seconds: float, channels: int = 2, seed: int = 0, chunk_frames: int = 1 << 20):
    """A test context (a pulsing 110 Hz tone with a little noise), float32, written a chunk at a time so that
    making it does not raise the peak memory the benchmark measures (float64 temporaries of a 5-minute region
    peak near 700 MiB)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    frames = int(sample_rate * seconds)
    out = np.empty((channels, frames), np.float32)
    for start in range(0, frames, chunk_frames):
        t = np.arange(start, min(start + chunk_frames, frames)) / sample_rate
        mono = 0.3 * np.sin(2 * np.pi * 110 * t) * (1 + 0.5 * np.sign(np.sin(2 * np.pi * 2 * t)))
        for channel in range(channels):
            out[channel, start:start + len(t)] = mono + 0.01 * rng.standard_normal(len(t))
    return out


def _peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from
    the parent across fork and exec, so a child would report the (torch-loaded) parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # macOS: bytes would need / 2**20


def _child(spec: dict) -> dict:
    """One measurement in this process; ``spec`` says which backend, files, length and settings."""
    import numpy as np

    started = time.perf_counter()
    onnx = spec["backend"] in ONNX_BACKENDS
    if onnx:
        sys.modules["torch"] = None  # the runtime install has no torch: prove it and measure without it
    elif spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    from backline.engine.pipeline import GenerateRequest, generate, load_bundle, make_guided_denoiser
    from backline.plugin_bridge.server import keep_chunk_memory_in_process

    keep_chunk_memory_in_process()  # the engine process as the server runs it
    if onnx:
        bundle = load_bundle(backend="onnx", onnx_dir=spec["onnx_dir"], intra_op_threads=spec.get("threads"),
                             **ONNX_BACKENDS[spec["backend"]])
    else:
        bundle = load_bundle(spec["autoencoder"], spec["denoiser"], backend="torch", few_step_path=spec["few_step"])
    load_seconds = time.perf_counter() - started
    rate = bundle.sample_rate
    style = None if spec["no_style"] else _song(rate, 5.0, 1, seed=1)
    request = GenerateRequest(context=_song(rate, spec["seconds"]), sample_rate=rate, steps=spec["steps"],
                              style_audio=style, style_sample_rate=rate if style is not None else None)
    generate_started = time.perf_counter()
    info = generate(bundle, request).info  # its info only: each generation's peak, not three stems held at once
    generate_seconds = time.perf_counter() - generate_started
    # a warm engine (the server, models loaded and run once): the same request again, and one take of it
    warm_started = time.perf_counter()
    generate(bundle, request)
    warm_seconds = time.perf_counter() - warm_started
    one_started = time.perf_counter()
    generate(bundle, dataclasses.replace(request, candidates=1))
    one_take_seconds = time.perf_counter() - one_started
    peak_rss_mib = _peak_rss_mib()
    # warm per-call latency of the batched denoiser at this length
    contract = bundle.contract
    frames = -(-int(rate * spec["seconds"]) // contract.hop_length)
    rng = np.random.default_rng(0)
    context = rng.standard_normal((contract.latent_channels, frames)).astype(np.float32)
    style_vector = None if spec["no_style"] else rng.standard_normal(contract.style_dim).astype(np.float32)
    denoise = make_guided_denoiser(bundle, context, style_vector, "bass", 1.25, 1.25)
    x = rng.standard_normal((1, contract.latent_channels, frames)).astype(np.float32)
    calls = []
    for _ in range(5):
        call_started = time.perf_counter()
        denoise(x, 1.0)
        calls.append(time.perf_counter() - call_started)
    timings = info["timings"]
    takes = info["controls"].get("candidates", {}).get("takes", 1)
    return {
        "backend": spec["backend"], "seconds": spec["seconds"], "steps": info["steps"],
        "sampler": info["sampler"],
        "guidance_passes": 2 if spec["no_style"] else 3, "latent_frames": frames,
        "providers": list(bundle.backend.providers) if onnx else ["torch-cpu"],
        "step_graph": info["step_graph"],
        "threads": spec.get("threads"), "load_seconds": round(load_seconds, 3),
        "generate_seconds": round(generate_seconds, 3),
        "realtime_factor": round(spec["seconds"] / generate_seconds, 2),
        "warm_generate_seconds": round(warm_seconds, 3), "warm_one_take_seconds": round(one_take_seconds, 3),
        # a bass samples several takes by default (GenerateRequest.candidates): a step is one take's step
        "takes": takes,
        "step_ms": round(1000 * timings["sample_seconds"] / (info["steps"] * takes), 2),
        "denoiser_call_ms": round(1000 * float(np.median(calls)), 2),
        "encode_seconds": timings["encode_seconds"], "decode_seconds": timings["decode_seconds"],
        "peak_rss_mib": peak_rss_mib,
        "torch_imported": bool(sys.modules.get("torch")),
        "models": info["models"],
    }


def _interleaved(ae_path: Path, dn_path: Path, onnx_dir: Path, seconds: float, threads: int | None,
                 no_style: bool, repeats: int = 7) -> dict:
    """Median batched denoiser call of torch and onnxruntime, alternating in one process, so both see
    the same machine load (the children's figures drift when other work shares the CPU)."""
    import numpy as np
    import torch

    from backline.engine.pipeline import load_bundle, make_guided_denoiser

    torch_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        bundles = {"torch": load_bundle(ae_path, dn_path, backend="torch"),
                   "onnx": load_bundle(backend="onnx", onnx_dir=onnx_dir, intra_op_threads=threads)}
        contract = bundles["onnx"].contract
        frames = -(-int(contract.sample_rate * seconds) // contract.hop_length)
        rng = np.random.default_rng(0)
        context = rng.standard_normal((contract.latent_channels, frames)).astype(np.float32)
        style = None if no_style else rng.standard_normal(contract.style_dim).astype(np.float32)
        x = rng.standard_normal((1, contract.latent_channels, frames)).astype(np.float32)
        calls = {name: make_guided_denoiser(b, context, style, "bass", 1.25, 1.25) for name, b in bundles.items()}
        times: dict[str, list[float]] = {name: [] for name in calls}
        for repeat in range(repeats + 1):
            for name, denoise in calls.items():
                started = time.perf_counter()
                denoise(x, 1.0)
                if repeat:  # the first round warms up
                    times[name].append(1000 * (time.perf_counter() - started))
        audio = (0.3 * rng.standard_normal((1, int(contract.sample_rate * seconds)))).astype(np.float32)
        codec: dict[str, list[float]] = {f"{name}_{part}": [] for name in bundles for part in ("encode", "decode")}
        for repeat in range(3):
            for name, bundle in bundles.items():
                started = time.perf_counter()
                latents = bundle.backend.encode(audio)
                encoded = time.perf_counter()
                bundle.backend.decode(latents)
                codec[f"{name}_encode"].append(1000 * (encoded - started))
                codec[f"{name}_decode"].append(1000 * (time.perf_counter() - encoded))
    finally:
        torch.set_num_threads(torch_threads)
    medians = {name: round(float(np.median(t)), 2) for name, t in times.items()}
    return {"seconds": seconds, "latent_frames": frames, "guidance_passes": 2 if no_style else 3,
            "median_call_ms": medians, "onnx_speedup": round(medians["torch"] / medians["onnx"], 2),
            "autoencoder_median_ms": {k: round(float(np.median(v)), 1) for k, v in codec.items()}}


def _sampling_inputs(contract, seconds: float, no_style: bool) -> dict:
    """Seeded inputs of one bass sampling over ``seconds``: latent frames, context, style (or None), the model's
    default guidance and the start x at sigma_max."""
    import numpy as np

    from backline.engine.runtime import guidance_for

    frames = -(-int(contract.sample_rate * seconds) // contract.hop_length)
    rng = np.random.default_rng(0)
    context = rng.standard_normal((contract.latent_channels, frames)).astype(np.float32)
    style = None if no_style else rng.standard_normal(contract.style_dim).astype(np.float32)
    scales = guidance_for(contract.guidance, "bass")
    cfg = (scales["cfg_context"], scales["cfg_style"])
    x = (rng.standard_normal((1, contract.latent_channels, frames)) * contract.sigma_max).astype(np.float32)
    return {"frames": frames, "context": context, "style": style, "cfg": cfg, "x": x}


def _alternate(paths: dict, sigmas, steps: int, repeats: int) -> tuple[dict[str, float], dict]:
    """Run each ``paths[name](sigmas)`` in turn, ``repeats`` rounds after a two-step warm-up round; returns the
    median milliseconds per step of each and its last result."""
    import numpy as np

    times: dict[str, list[float]] = {name: [] for name in paths}
    ends = {}
    for repeat in range(repeats + 1):
        for name, sample in paths.items():
            started = time.perf_counter()
            ends[name] = sample(sigmas if repeat else sigmas[-3:])  # the first round warms up, two steps
            if repeat:
                times[name].append(1000 * (time.perf_counter() - started) / steps)
    return {name: round(float(np.median(t)), 2) for name, t in times.items()}, ends


def _interleaved_sampling(onnx_dir: Path, seconds: float, steps: int, threads: int | None, no_style: bool,
                          repeats: int = 3) -> dict:
    """Median time per step of whole samplings through the step graph and through the per-call path,
    alternating in one process, with the pipeline's guidance (the model's default scales); and of four takes
    through the step graph as one batch against one after another (``generate``'s bass takes)."""
    import numpy as np

    from backline.engine.pipeline import guidance_passes, load_bundle, make_guided_denoiser, step_constants
    from backline.engine.sampling import get_sampler, get_sigmas_karras

    bundle = load_bundle(backend="onnx", onnx_dir=onnx_dir, intra_op_threads=threads)
    contract = bundle.contract
    inputs = _sampling_inputs(contract, seconds, no_style)
    context, style, cfg, x = inputs["context"], inputs["style"], inputs["cfg"], inputs["x"]
    step_sampler = bundle.backend.step_sampler(step_constants(guidance_passes(contract, style, "bass", *cfg), context))
    denoise = make_guided_denoiser(bundle, context, style, "bass", *cfg)
    takes = np.concatenate([x] * 4)
    paths = {"step_graph": lambda sigmas: step_sampler(x, sigmas, "dpmpp_2m"),
             "per_call": lambda sigmas: get_sampler("dpmpp_2m")(denoise, x, sigmas),
             "four_takes_batched": lambda sigmas: step_sampler(takes, sigmas, "dpmpp_2m"),
             "four_takes_one_by_one": lambda sigmas: [step_sampler(take[None], sigmas, "dpmpp_2m") for take in takes]}
    medians, _ = _alternate(paths, get_sigmas_karras(steps, contract.sigma_min, contract.sigma_max), steps, repeats)
    return {"seconds": seconds, "latent_frames": inputs["frames"], "steps": steps, "median_step_ms": medians,
            "step_graph_speedup": round(medians["per_call"] / medians["step_graph"], 3),
            "takes_batched_speedup": round(medians["four_takes_one_by_one"] / medians["four_takes_batched"], 3)}


def _interleaved_precision(onnx_dir: Path, seconds: float, steps: int, threads: int | None, no_style: bool,
                           repeats: int = 3) -> dict:
    """Median time per step of whole samplings through the float and the int8 step graphs, alternating in one
    process, with the pipeline's guidance, and how far the int8 sampling ends from the float one."""
    import numpy as np

    from backline.engine.pipeline import guidance_passes, load_bundle, step_constants
    from backline.engine.sampling import get_sigmas_karras

    bundles = {precision: load_bundle(backend="onnx", onnx_dir=onnx_dir, intra_op_threads=threads, precision=precision)
               for precision in ("fp32", "int8")}
    contract = bundles["fp32"].contract
    inputs = _sampling_inputs(contract, seconds, no_style)
    x = inputs["x"]
    constants = step_constants(guidance_passes(contract, inputs["style"], "bass", *inputs["cfg"]), inputs["context"])
    samplers = {name: bundle.backend.step_sampler(constants) for name, bundle in bundles.items()}
    paths = {name: (lambda sigmas, sample=sample: sample(x, sigmas, "dpmpp_2m")) for name, sample in samplers.items()}
    medians, ends = _alternate(paths, get_sigmas_karras(steps, contract.sigma_min, contract.sigma_max), steps, repeats)
    difference = float(np.linalg.norm(ends["int8"] - ends["fp32"]) / np.linalg.norm(ends["fp32"]))
    return {"seconds": seconds, "latent_frames": inputs["frames"], "steps": steps, "median_step_ms": medians,
            "int8_speedup": round(medians["fp32"] / medians["int8"], 3),
            "int8_latents_rel_l2_difference": round(difference, 4)}


def _model_files(args, work: Path) -> tuple[Path, Path, str]:
    from backline.engine.pipeline import default_model_paths

    if args.autoencoder and args.denoiser:
        return args.autoencoder, args.denoiser, "given"
    from backline.export.debug_models import write_debug_models

    shipped_ae, shipped_dn = default_model_paths()
    ae_path = args.autoencoder or (shipped_ae if shipped_ae.is_file() else None)
    dn_path = args.denoiser or (shipped_dn if shipped_dn.is_file() else None)
    if ae_path and dn_path:
        given = [name for name, value in (("autoencoder", args.autoencoder), ("denoiser", args.denoiser)) if value]
        return Path(ae_path), Path(dn_path), f"the {given[0]} given, the shipped rest" if given else "shipped"
    debug_ae, debug_dn = write_debug_models(work, args.config, seed=0)
    if ae_path:
        from backline.models.contract import load_model

        channels = load_model(ae_path, kind="autoencoder")[1]["config"]["latent_channels"]
        debug_channels = load_model(debug_dn, kind="denoiser")[1]["config"]["latent_channels"]
        if channels == debug_channels:
            return Path(ae_path), debug_dn, f"shipped autoencoder, random {args.config} denoiser"
    if dn_path:
        return debug_ae, Path(dn_path), f"random {args.config} autoencoder, shipped denoiser"
    return debug_ae, debug_dn, f"random weights, {args.config} configs"


def _command_seconds(work: Path, seconds: float, args: argparse.Namespace) -> float:
    """A producer's whole wait at the command line: ``backline generate`` from a cold start (interpreter, imports,
    model load, reading the region's WAV, generating with the defaults and no style, writing the stem)."""
    from backline.engine.audio import write_audio

    rate = 44_100
    context, out = work / f"context_{seconds:g}s.wav", work / "stem.wav"
    write_audio(context, _song(rate, seconds), rate)
    command = [sys.executable, "-m", "backline", "generate", "--context", str(context), "--out", str(out),
               "--onnx-dir", str(work / "onnx"), "--quiet"]
    command += ["--steps", str(args.steps)] if args.steps else []
    command += ["--threads", str(args.threads)] if args.threads else []
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"backline generate failed:\n{done.stderr}")
    return round(time.perf_counter() - started, 3)


def run(args: argparse.Namespace) -> dict:
    """Export (and check) the graphs, measure each backend and length in a fresh process; returns the report."""
    from backline.engine.pipeline import default_few_step_path, default_model_paths
    from backline.engine.runtime import DEFAULT_SAMPLING
    from backline.export.onnx import export_models

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="backline-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ae_path, dn_path, source = _model_files(args, work)
    few_step = args.few_step or (default_few_step_path() if dn_path == default_model_paths()[1] else None)
    export_started = time.perf_counter()
    export = export_models(ae_path, dn_path, work / "onnx", threads=args.threads, seed=0,  # the shipped check's inputs
                           int8="onnx-int8" in args.backends, few_step_path=few_step)
    export_seconds = time.perf_counter() - export_started
    results = []
    for seconds in args.seconds:
        for backend in args.backends:
            spec = {"backend": backend, "seconds": seconds, "steps": args.steps, "threads": args.threads,
                    "no_style": args.no_style, "autoencoder": str(ae_path), "denoiser": str(dn_path),
                    "few_step": str(few_step) if few_step else None, "onnx_dir": str(work / "onnx")}
            launched = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "backline.export.bench", "--child", json.dumps(spec)],
                                  capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"the {backend} measurement failed:\n{done.stderr}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["wall_seconds_with_interpreter"] = round(time.perf_counter() - launched, 3)
            if backend == "onnx":
                result["command_seconds"] = _command_seconds(work, seconds, args)
            results.append(result)
            print(_row(result), file=sys.stderr, flush=True)
    interleaved = [_interleaved(ae_path, dn_path, work / "onnx", seconds, args.threads, args.no_style)
                   for seconds in args.seconds] if {"torch", "onnx"} <= set(args.backends) else []
    steps = args.steps or DEFAULT_SAMPLING["steps"]  # the per-step comparisons: a step costs the same either way
    sampling = [_interleaved_sampling(work / "onnx", seconds, steps, args.threads, args.no_style)
                for seconds in args.seconds] if {"onnx", "onnx-calls"} <= set(args.backends) else []
    precision = [_interleaved_precision(work / "onnx", seconds, steps, args.threads, args.no_style)
                 for seconds in args.seconds] if {"onnx", "onnx-int8"} <= set(args.backends) else []
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {"steps": args.steps or "the denoiser's", "threads": args.threads,
                     "style_reference": not args.no_style},
        "interleaved_denoiser": interleaved,
        "interleaved_sampling": sampling,
        "interleaved_precision": precision,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)},
        "models": {"autoencoder": str(ae_path), "denoiser": str(dn_path), "few_step": str(few_step) if few_step else None,
                   "source": source},
        "export": {"seconds": round(export_seconds, 2),
                   "max_rel_error": {k: v["max_rel_error"] for k, v in export.checks.items()}},
        "results": results,
    }


HEADER = (f"{'backend':10} {'audio s':>7} {'steps':>5} {'takes':>5} {'frames':>6} {'step ms':>8} {'call ms':>8} "
          f"{'generate s':>10} {'warm s':>7} {'1 take s':>8} {'process s':>9} {'command s':>9} {'peak MiB':>8}")


def _row(r: dict) -> str:
    return (f"{r['backend']:10} {r['seconds']:7g} {r['steps']:5d} {r.get('takes', 1):5d} {r['latent_frames']:6d} "
            f"{r['step_ms']:8.1f} {r['denoiser_call_ms']:8.1f} {r['generate_seconds']:10.2f} "
            f"{r.get('warm_generate_seconds', float('nan')):7.2f} {r.get('warm_one_take_seconds', float('nan')):8.2f} "
            f"{r['wall_seconds_with_interpreter']:9.2f} {r.get('command_seconds', float('nan')):9.2f} "
            f"{r['peak_rss_mib']:8.0f}")


def table(report: dict) -> str:
    lines = [f"models: {report['models']['source']}; machine: {report['machine']['cpu_count']} cores, "
             f"load average {report['machine']['load_average_1min']} when finished", HEADER]
    lines += [_row(r) for r in report["results"]]
    for r in report.get("interleaved_denoiser", []):
        lines.append(f"denoiser call, {r['seconds']:g} s ({r['latent_frames']} frames, batch {r['guidance_passes']}), "
                     f"alternating in one process: torch {r['median_call_ms']['torch']:.1f} ms, "
                     f"onnx {r['median_call_ms']['onnx']:.1f} ms (onnx {r['onnx_speedup']:.2f}x)")
        codec = r.get("autoencoder_median_ms")
        if codec:
            lines.append(f"  autoencoder, same way: encode torch {codec['torch_encode']:.0f} ms, onnx {codec['onnx_encode']:.0f} ms "
                         f"(STFT included); decode torch {codec['torch_decode']:.0f} ms, onnx {codec['onnx_decode']:.0f} ms "
                         f"(inverse STFT included)")
    for r in report.get("interleaved_sampling", []):
        ms = r["median_step_ms"]
        lines.append(f"sampling, {r['seconds']:g} s ({r['latent_frames']} frames, {r['steps']} steps), alternating in one "
                     f"process: step graph {ms['step_graph']:.1f} ms/step, per-call {ms['per_call']:.1f} ms/step "
                     f"(step graph {r['step_graph_speedup']:.2f}x); four takes as one batch "
                     f"{ms['four_takes_batched']:.1f} ms/step, one after another {ms['four_takes_one_by_one']:.1f} ms/step "
                     f"(batched {r['takes_batched_speedup']:.2f}x)")
    for r in report.get("interleaved_precision", []):
        ms = r["median_step_ms"]
        lines.append(f"precision, {r['seconds']:g} s ({r['latent_frames']} frames, {r['steps']} steps), alternating in "
                     f"one process: fp32 {ms['fp32']:.1f} ms/step, int8 {ms['int8']:.1f} ms/step (int8 "
                     f"{r['int8_speedup']:.2f}x; its latents {r['int8_latents_rel_l2_difference']:.3f} away, relative L2)")
    lines.append("RTF = seconds of audio per second of generate(); process s = whole child process "
                 "(interpreter, imports, model load, three generations, the denoiser timing loop); command s = "
                 "`backline generate` on the region's WAV from a cold start")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--autoencoder", type=Path, help="autoencoder file (default: the shipped one, else random weights)")
    p.add_argument("--denoiser", type=Path, help="denoiser file (default: the shipped one, else random weights)")
    p.add_argument("--few-step", type=Path, help="a denoiser distilled from --denoiser's, for the few_step sampler "
                   "(default: the shipped one beside the shipped denoiser)")
    p.add_argument("--config", default="default", choices=("tiny", "default"),
                   help="config of the random-weight models used when files are missing (default: default)")
    p.add_argument("--seconds", type=float, nargs="+", default=[60.0], help="region lengths (default: 60)")
    p.add_argument("--steps", type=int, default=None, help="diffusion steps (default: the denoiser file's)")
    p.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-calls"], choices=("torch", *ONNX_BACKENDS),
                   help="torch; onnx (the engine's default: the step graph); onnx-calls (one denoiser call per step); "
                        "onnx-int8 (the step graph with int8 weights, CPU)")
    add_threads_argument(p, None, what="both backends")
    p.add_argument("--no-style", action="store_true", help="no style reference: two guidance passes, not three")
    p.add_argument("--work", type=Path, help="folder for the exported graphs and random models (default: a temp dir)")
    p.add_argument("--json", type=Path, help="also write the report here")


def main(args: argparse.Namespace) -> int:
    report = run(args)
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(_child(json.loads(sys.argv[2]))))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(prog="python -m backline.export.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
