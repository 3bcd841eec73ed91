"""``backline generate``: the main job, a stem for a context file, from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = """\
Generate a bass or drum stem that plays along with CONTEXT and write it to OUT.

The stem has the context's sample rate, channel count and exact length, so it lines up sample for
sample when both are placed at the same position. It is deterministic for a given --seed.

examples:
  backline generate --context examples/ultima_context.flac --instrument bass --out bass.wav
  backline generate --context song.wav --instrument drums --style ref.wav --seed 3 --out drums.wav
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate a bass or drum stem for a context file",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--context", required=True, type=Path, help="the audio to accompany (WAV, AIFF, FLAC)")
    p.add_argument("--instrument", choices=("bass", "drums"), default="bass")
    p.add_argument("--out", required=True, type=Path, help="where to write the stem (.wav, .flac)")
    p.add_argument("--style", type=Path, help="a reference recording of the sound you want")
    p.add_argument("--style-b", type=Path, help="a second reference, blended with --style by --style-ratio")
    p.add_argument("--style-ratio", type=float, default=0.5, help="0 = --style only, 1 = --style-b only (default 0.5)")
    p.add_argument("--prompt", help="a text description of the sound (needs the style encoder of issue 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=30, help="diffusion steps (default 30)")
    p.add_argument("--sampler", default="dpmpp_2m", help="euler, heun or dpmpp_2m (default)")
    p.add_argument("--cfg-context", type=float, default=1.25, help="guidance scale of the context (default 1.25)")
    p.add_argument("--cfg-style", type=float, default=1.25, help="guidance scale of the style (default 1.25)")
    p.add_argument("--autoencoder", type=Path, help="autoencoder file (default: the shipped one)")
    p.add_argument("--denoiser", type=Path, help="denoiser file (default: the shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from backline.engine.audio import AudioError, read_audio, write_audio
    from backline.engine.pipeline import GenerateRequest, generate, load_bundle

    if args.prompt:
        print("error: text prompts need the text/audio style encoder (issue 6), which is not shipped yet; "
              "use --style with a reference recording instead", file=sys.stderr)
        return 2
    try:
        context, sample_rate = read_audio(args.context)
        style = style_b = None
        style_rate = None
        if args.style:
            style, style_rate = read_audio(args.style)
        if args.style_b:
            style_b, rate_b = read_audio(args.style_b)
            if style is not None and rate_b != style_rate:
                from backline.engine.audio import resample

                style_b = resample(style_b, rate_b, style_rate)
        bundle = load_bundle(args.autoencoder, args.denoiser)
        request = GenerateRequest(context=context, sample_rate=sample_rate, instrument=args.instrument,
                                  style_audio=style, style_sample_rate=style_rate, style_audio_b=style_b,
                                  style_ratio=args.style_ratio, seed=args.seed, steps=args.steps,
                                  sampler=args.sampler, cfg_context=args.cfg_context, cfg_style=args.cfg_style)
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=args.steps, desc=f"{args.instrument}", unit="step", file=sys.stderr)
        result = generate(bundle, request, progress=(lambda i, n: bar.update(1)) if bar else None)
        if bar:
            bar.close()
    except (AudioError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_audio(args.out, result.audio, result.sample_rate)
    print(f"{args.out}: {result.audio.shape[1] / result.sample_rate:.2f} s, {result.audio.shape[0]} channel(s), "
          f"{result.sample_rate} Hz")
    print(json.dumps(result.info))
    return 0
