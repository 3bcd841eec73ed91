"""``backline generate`` (the main job) and ``backline arrange``, from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = """\
Generate a bass or drum stem that plays along with CONTEXT and write it to OUT.

The stem has the context's sample rate and exact length (and its channel count, or two channels
with --stereo-width), so it lines up sample for sample when both sit at the same position. It is
deterministic for a given --seed.

controls (ranges and loops in seconds, or in bars with --tempo):
  --stem FILE --regenerate 4 8         keep FILE, regenerate 4 s..8 s of it to fit the context
  --stem FILE --regenerate-bars 3 5    the same from bar 3 to bar 5 (needs --tempo)
  --stem FILE --variation 0.3          a variation of FILE: 0 is FILE itself, 1 a fresh stem
  --loop-bars 2 --tempo 120            a stem that repeats every 2 bars (--loop-strength < 1: nearly)
  --stereo-width 0.5                   pseudo-stereo; the mono sum stays the stem
  --style a.wav --style-b b.wav --style-ratio 0.3    a blend of two references
  --prompt "fretless bass"             a text description (with --style: a blend of the two)
  --style a.wav --style-match 0        guided by the reference only: no statistics match, levelled to the context

examples:
  backline generate --context examples/ultima_context.flac --instrument bass --out bass.wav
  backline generate --context song.wav --instrument drums --style ref.wav --seed 3 --out drums.wav
  backline generate --context song.wav --stem bass.wav --regenerate-bars 5 7 --tempo 96 --out bass2.wav
"""

ARRANGE_HELP = """\
Build an arrangement one stem at a time: each instrument is generated against the context plus the
stems generated before it. Writes <instrument>.wav for each stem and mix.wav to --out-dir.

examples:
  backline arrange --seconds 16 --instruments drums bass --out-dir song/      from nothing
  backline arrange --context keys.wav --instruments drums bass --out-dir song/
"""


PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


# The generation parameters a command takes as flags, all from one schema (engine/params.py), in --help order.
SOUND_PARAMS = ("seed", "steps", "sampler", "cfg_context", "cfg_style", "style_ratio", "style_prompt", "style_pad",
                "style_match", "stereo_width", "candidates")
CONTROL_PARAMS = ("regenerate_seconds", "regenerate_bars", "variation_strength", "loop_seconds", "loop_bars",
                  "loop_strength", "tempo_bpm", "beats_per_bar", "region_start_beats", "chords", "cfg_tempo",
                  "cfg_chords")


def flag_of(name: str) -> str:
    from backline.engine.params import PARAMS

    return PARAMS[name].flag or "--" + name.replace("_", "-")


def add_param_arguments(p: argparse.ArgumentParser, names: tuple[str, ...], *, send_defaults: bool = True) -> None:
    """Flags for the generation parameters ``names``: type, range, meaning and default from the schema, so
    ``backline generate`` and ``backline client generate`` take the same flags. ``send_defaults=False``: a flag
    not given is left out of ``generation_params`` (the engine applies the same default)."""
    from backline.engine.params import PARAMS

    for name in names:
        param = PARAMS[name]
        help_text = param.meaning + (f" (default {param.default})" if param.default is not None else "")
        kwargs: dict = {"dest": name, "default": param.default if send_defaults else None,
                        "help": f"{help_text}; {param.describe()}"}
        if param.kind == "int":
            kwargs["type"] = int
        elif param.kind == "number":
            kwargs["type"] = float
        elif param.kind == "choice":
            kwargs["choices"] = param.choices
        elif param.kind == "range":
            kwargs.update(type=float, nargs=2, metavar=("START", "END"))
        elif param.kind == "point":
            kwargs.update(type=float, nargs=2, metavar=("X", "Y"))
        elif param.kind == "bars":
            kwargs.update(nargs=2, metavar=("BAR", "BAR"))
        p.add_argument(flag_of(name), **kwargs)


def generation_params(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The flat parameters (as the bridge sends them) of the flags ``add_param_arguments`` added."""
    from backline.engine.params import TEMPO_PARAMS

    params = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if params.get("tempo_bpm") is None:  # meter and bar position mean something only with a tempo
        for name in TEMPO_PARAMS:
            params.pop(name, None)
    for name in ("regenerate_seconds", "regenerate_bars", "style_pad"):
        if name in params:
            params[name] = list(params[name])
    return params


def add_style_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--style", type=Path, help="a reference recording of the sound you want")
    p.add_argument("--style-b", type=Path, help="a second reference, blended with --style by --style-ratio")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Which models and runtime: the same for ``generate``, ``arrange`` and ``serve``."""
    p.add_argument("--autoencoder", type=Path, help="autoencoder file (default: the shipped one)")
    p.add_argument("--denoiser", type=Path, help="denoiser file (default: the shipped one)")
    p.add_argument("--few-step", type=Path, help="torch: a denoiser distilled from --denoiser's, for --sampler few_step "
                   "(default: the shipped one beside the shipped denoiser)")
    p.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                   help="onnxruntime on exported graphs or torch on safetensors (default: onnx when shipped)")
    p.add_argument("--onnx-dir", type=Path, help="folder of exported .onnx files (implies --backend onnx)")
    add_threads_argument(p)
    p.add_argument("--provider", choices=sorted(PROVIDERS),
                   help="onnxruntime provider (default: cuda when onnxruntime-gpu offers it, else cpu)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="onnx on a CPU: int8 runs the denoiser's int8 graphs (`backline export --int8`), faster per "
                        "step but measured to cost quality with the shipped models (export/benchmarks/README.md)")
    p.add_argument("--no-step-graph", action="store_true",
                   help="onnx: sample with one denoiser call per step and the update in numpy, not the step graph")


def add_threads_argument(p: argparse.ArgumentParser, default: int | None = None, *, what: str = "the models") -> None:
    """The one --threads option every command shares: CPU threads for ``what``."""
    p.add_argument("--threads", type=int, default=default,
                   help=f"CPU threads for {what}" + (f" (default {default})" if default else " (default: the library's choice)"))


def load_from_args(args: argparse.Namespace):
    """The bundle ``add_model_arguments``' flags name."""
    from backline.engine.pipeline import load_bundle

    backend = "onnx" if args.onnx_dir else args.backend
    return load_bundle(args.autoencoder, args.denoiser, backend=backend, onnx_dir=args.onnx_dir,
                       intra_op_threads=args.threads, providers=[PROVIDERS[args.provider]] if args.provider else None,
                       step_graph=not args.no_step_graph, precision=args.precision, few_step_path=args.few_step)


def _add_sampling(p: argparse.ArgumentParser) -> None:
    add_style_arguments(p)
    add_param_arguments(p, SOUND_PARAMS)
    add_model_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate a bass or drum stem for a context file",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--context", required=True, type=Path, help="the audio to accompany (WAV, AIFF, FLAC)")
    p.add_argument("--out", required=True, type=Path, help="where to write the stem (.wav, .flac)")
    p.add_argument("--stem", type=Path, help="an existing stem for this context, to regenerate a range of or vary")
    p.add_argument("--loop-cycle-out", type=Path, help="also write one seamless cycle of the loop here")
    p.add_argument("--midi", type=Path, help="also write the stem transcribed as MIDI here (at --tempo, else at the "
                                             "tempo estimated from the context)")
    add_param_arguments(p, ("instrument",) + CONTROL_PARAMS)
    _add_sampling(p)
    p.set_defaults(func=_generate)

    a = subparsers.add_parser("arrange", help="build a multi-track arrangement one stem at a time",
                              description=ARRANGE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--context", type=Path, help="a partial arrangement to build on (default: silence)")
    a.add_argument("--seconds", type=float, help="length of the arrangement from nothing")
    a.add_argument("--sample-rate", type=int, default=44_100, help="rate of an arrangement from nothing")
    a.add_argument("--instruments", nargs="+", choices=("bass", "drums"), default=["drums", "bass"])
    a.add_argument("--out-dir", required=True, type=Path)
    _add_sampling(a)
    a.set_defaults(func=_arrange)


def _style_audio(args: argparse.Namespace) -> dict:
    from backline.engine.audio import read_audio, resample

    audio: dict = {}
    if args.style:
        audio["style_audio"], audio["style_sample_rate"] = read_audio(args.style)
    if args.style_b:
        style_b, rate_b = read_audio(args.style_b)
        audio["style_audio_b"] = resample(style_b, rate_b, audio["style_sample_rate"]) if args.style else style_b
    return audio


def _progress_bar(args: argparse.Namespace, total: int, label: str):
    if args.quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the runtime install has no tqdm: report steps on stderr instead
        return None
    return tqdm(total=total, desc=label, unit="step", file=sys.stderr)


def _advance(bar):
    """A progress callback moving ``bar`` to step ``i`` of ``total`` (a bass's takes make the total grow past --steps)."""
    def on_step(i: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(i - bar.n)
    return on_step


def _generate(args: argparse.Namespace) -> int:
    from backline.engine.audio import AudioError, read_audio, resample, write_audio
    from backline.engine.controls import loop_cycle
    from backline.engine.pipeline import generate, request_from_params

    params = generation_params(args, ("instrument",) + SOUND_PARAMS + CONTROL_PARAMS)
    try:
        context, sample_rate = read_audio(args.context)
        audio = _style_audio(args)
        if args.stem:
            stem, stem_rate = read_audio(args.stem)
            audio["stem"] = resample(stem, stem_rate, sample_rate)
        request = request_from_params(params, context, sample_rate, **audio)
        bundle = load_from_args(args)
        bar = _progress_bar(args, args.steps, args.instrument)
        result = generate(bundle, request, progress=_advance(bar) if bar is not None else None)
        if bar is not None:  # a tqdm bar without a total (the model's steps, known later) has no truth value
            bar.close()
    except (AudioError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_audio(args.out, result.audio, result.sample_rate)
    print(f"{args.out}: {result.audio.shape[1] / result.sample_rate:.2f} s, {result.audio.shape[0]} channel(s), "
          f"{result.sample_rate} Hz")
    if args.midi:
        from backline.engine.transcribe import stem_to_midi

        midi = stem_to_midi(result.audio, result.sample_rate, args.instrument, bpm=args.tempo_bpm, tempo_audio=context)
        args.midi.parent.mkdir(parents=True, exist_ok=True)
        args.midi.write_bytes(midi.data)
        print(f"{args.midi}: the stem as MIDI at {midi.bpm:g} BPM" + ("" if midi.tempo_source == "given" else
                                                                     " (estimated from the context; --tempo sets it)"))
    loop_seconds = result.info["controls"].get("loop_seconds")
    if args.loop_cycle_out and loop_seconds:
        write_audio(args.loop_cycle_out, loop_cycle(result.audio, int(round(loop_seconds * result.sample_rate))),
                    result.sample_rate)
        print(f"{args.loop_cycle_out}: one {loop_seconds:.3f} s cycle of the loop")
    print(json.dumps(result.info))
    return 0


def _arrange(args: argparse.Namespace) -> int:
    import numpy as np

    from backline.engine.audio import AudioError, read_audio, write_audio
    from backline.engine.pipeline import arrange, request_from_params

    try:
        if args.context:
            context, sample_rate = read_audio(args.context)
        elif args.seconds and args.seconds > 0:
            sample_rate = args.sample_rate
            context = np.zeros((1, int(round(args.seconds * sample_rate))), np.float32)
        else:
            raise ValueError("give --context, or --seconds for an arrangement from nothing")
        request = request_from_params(generation_params(args, SOUND_PARAMS), context, sample_rate, **_style_audio(args))
        bundle = load_from_args(args)
        stems, mix = arrange(bundle, request, args.instruments)
    except (AudioError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for instrument, stem in stems.items():
        write_audio(args.out_dir / f"{instrument}.wav", stem, sample_rate)
    write_audio(args.out_dir / "mix.wav", mix, sample_rate)
    print(f"{args.out_dir}: {', '.join(f'{name}.wav' for name in stems)}, mix.wav "
          f"({mix.shape[1] / sample_rate:.2f} s, {sample_rate} Hz)")
    return 0
