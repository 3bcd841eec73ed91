"""``backline eval transcription`` and ``backline eval accompaniment``.

``register_eval(eval_models)`` adds both under the existing ``eval`` command's subparsers; it only
builds parsers (no numpy-heavy or torch imports), so ``backline --help`` stays instant.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from backline.data.dataset import SPLITS
from backline.engine.params import PARAMS

TRANSCRIPTION_HELP = """\
Measure `backline transcribe` on a data build's held-out stems, whose MIDI is known.

The ground truth of each stem is regenerated from its source MIDI with the variant's recorded
augmentation. Bass: note precision / recall / F1 (onset within 50 ms, exact pitch). Drums: onset
F1 per class (kick 35/36, snare 37-40, hi-hat 42/44/46). Writes transcription.md and
transcription.json to --out.

example:
  backline eval transcription --data $BACKLINE_DATA/full --out training/reports
"""

ACCOMPANIMENT_HELP = """\
Measure how well stems fit their contexts, how real they sound, and whether they are sane.

For the build's --split pairs it scores the real stems, shuffled stems (a real stem of another
piece), a rule-based accompaniment, and -- with --generated DIR holding <variant_id>__<instrument>.wav
files -- generated stems. Fit is normalised so real pairs score 1 and shuffled pairs 0. Realism
uses a fixed log-mel embedding (not CLAP or VGGish). With --generate, DIR is first filled by the
engine (`load_bundle()` unless --autoencoder/--denoiser are given) for --count pairs per instrument
of --seconds each. Writes report.md, report.json and PNG figures (per-pair fit, example
spectrograms; need matplotlib) to --out.

examples:
  backline eval accompaniment --data $BACKLINE_DATA/full --out training/reports/baselines
  backline eval accompaniment --data $BACKLINE_DATA/full --generated runs/gen --generate --count 6 \\
      --seconds 10 --out training/reports/accompaniment
"""


STYLE_HELP = """\
APA-style adherence of generated stems to the style they were given, on held-out pairs: a reference
(a later segment of the pair's real stem) and a prompt (the stem's GM family name). Distances in the
denoiser's style space, for references in a fixed log-mel embedding, and in a judge's CLAP-style space
(an audio tower and prompt prior trained contrastively here: the shipped models/judge/default.safetensors,
or --judge). Each measure is also taken for the real stems, which says how far it can go. Writes
report.md and report.json to --out.

example:
  backline eval style --data $BACKLINE_DATA/full --out training/reports/style
"""

TEMPO_HELP = """\
Measure the tempo and beat estimators (engine/tempo.py: what `backline transcribe` and `generate --midi` use
when no tempo is given, and a beat grid when the host gives none) on a data build's MMA songs, whose charts
know their tempo and beats: tempo right within 4 %, half or double, or wrong; beat F-measure within 70 ms
(with the tempo estimated, and given); per style family and tempo band. Writes report.md and report.json.

example:
  backline eval tempo --data $BACKLINE_DATA/broad --split unseen --out training/reports/tempo
"""

COMPARE_HELP = """\
Paired differences between two `backline eval accompaniment --generate` reports made on the same pairs (the
same --split, --count, --seconds and --seed): for each fit measure, the candidate's generated stems minus the
baseline's, pair by pair, in normalised units, with a 90 % bootstrap interval; and both Frechet distances.
How a sampler or a default is chosen (a few-step sampler must lose at most 0.02 against the 30-step one).

example:
  backline eval compare /work/reports/student-unseen training/reports/accompaniment-unseen
"""

CONTROLS_HELP = """\
Measure each producer control on the bundled example with the shipped models: seams of a
regenerated range (against a naive splice), variation distance per strength, loop periodicity per
loop strength, stereo correlation per width, style-blend distances per ratio, and an arrangement
built from silence. Writes report.md, report.json and short FLAC examples to --out.

example:
  backline eval controls --out training/reports/controls
"""


def register_eval(eval_models: argparse._SubParsersAction, formatter=argparse.RawDescriptionHelpFormatter) -> None:
    """Add ``transcription``, ``accompaniment`` and ``controls`` to ``backline eval``."""
    p = eval_models.add_parser("transcription", help="accuracy of `backline transcribe` on held-out stems",
                               description=TRANSCRIPTION_HELP, formatter_class=formatter)
    p.add_argument("--data", required=True, type=Path, help="data build directory (holds manifest.jsonl)")
    p.add_argument("--out", required=True, type=Path, help="report directory")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--max-seconds", type=float, default=None, help="only the first seconds of each stem")
    p.add_argument("--limit", type=int, default=None, help="at most this many stems per instrument")
    p.set_defaults(func=_eval_transcription)

    p = eval_models.add_parser("accompaniment", help="fit, realism and sanity of generated stems",
                               description=ACCOMPANIMENT_HELP, formatter_class=formatter)
    p.add_argument("--data", required=True, type=Path, help="data build directory (holds manifest.jsonl)")
    p.add_argument("--out", required=True, type=Path, help="report directory")
    p.add_argument("--generated", type=Path, default=None, help="directory of <variant_id>__<instrument>.wav stems")
    p.add_argument("--generate", action="store_true", help="fill --generated with the engine first")
    p.add_argument("--count", type=int, default=4, help="--generate: pairs per instrument (default 4)")
    p.add_argument("--seconds", type=float, default=10.0, help="--generate: seconds per pair (default 10)")
    p.add_argument("--offset-seconds", type=float, default=30.0, help="--generate: where in each piece to start")
    p.add_argument("--steps", type=int, default=None, help="--generate: diffusion steps (default: the model's)")
    p.add_argument("--round-trip", action="store_true",
                   help="also score the real stems through the autoencoder (always on with --generate)")
    p.add_argument("--cfg-context", type=float, help="--generate: context guidance scale (default: the model's)")
    p.add_argument("--cfg-style", type=float, help="--generate: style guidance scale (default: the model's)")
    p.add_argument("--candidates", type=int, default=None,
                   help="--generate: bass takes per pair, the most in key kept (default: the engine's)")
    p.add_argument("--cfg-tempo", type=float, default=None,
                   help="--generate: beat grid guidance scale (a denoiser told the beat; default 1)")
    p.add_argument("--cfg-chords", type=float, default=None,
                   help="--generate: harmony guidance scale (a denoiser told the chords; default 1)")
    p.add_argument("--given", action="append", choices=("tempo", "chords"), default=[],
                   help="--generate: send each song's tempo and/or chords as a host and a producer would (repeatable; "
                        "MMA songs; a denoiser told the beat and the chords)")
    p.add_argument("--autoencoder", type=Path, default=None, help="--generate: autoencoder file (default: shipped)")
    p.add_argument("--denoiser", type=Path, default=None, help="--generate: denoiser file (default: shipped)")
    p.add_argument("--few-step", type=Path, default=None,
                   help="--generate: a denoiser distilled from --denoiser's, for the few_step sampler (default: the "
                        "shipped one beside the shipped denoiser)")
    p.add_argument("--sampler", default=None, choices=PARAMS["sampler"].choices,
                   help="--generate: the sampler (default: the engine's for each instrument)")
    p.add_argument("--style", type=Path, default=None, help="style file the denoiser was trained with (default: the shipped one)")
    p.add_argument("--onnx-dir", type=Path, default=None, help="--generate: folder of exported graphs (default: shipped)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="--generate: the denoiser's precision (int8: the graphs `backline export --int8` writes)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="without --generated: seconds of each pair to score (default 60)")
    p.add_argument("--instrument", action="append", dest="instruments", choices=("bass", "drums"),
                   help="only this instrument (repeatable; default both)")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle and of generation")
    p.set_defaults(func=_eval_accompaniment)

    p = eval_models.add_parser("controls", help="what each producer control does with the shipped models",
                               description=CONTROLS_HELP, formatter_class=formatter)
    p.add_argument("--out", required=True, type=Path, help="report directory")
    p.add_argument("--autoencoder", type=Path, default=None, help="autoencoder file (default: the shipped one)")
    p.add_argument("--denoiser", type=Path, default=None, help="denoiser file (default: the shipped one)")
    p.add_argument("--style", type=Path, default=None, help="style file the denoiser was trained with (default: the shipped one)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_eval_controls)

    p = eval_models.add_parser("style", help="APA adherence of generated stems to a reference and to a prompt",
                               description=STYLE_HELP, formatter_class=formatter)
    p.add_argument("--data", required=True, type=Path, help="data build directory (holds manifest.jsonl)")
    p.add_argument("--out", required=True, type=Path, help="report directory")
    p.add_argument("--count", type=int, default=6, help="pairs per instrument (default 6)")
    p.add_argument("--seconds", type=float, default=8.0, help="context and reference length (default 8)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-style", type=float, help="style guidance scale (default: the model's)")
    p.add_argument("--autoencoder", type=Path, default=None, help="autoencoder file (default: the shipped one)")
    p.add_argument("--denoiser", type=Path, default=None, help="denoiser file (default: the shipped one)")
    p.add_argument("--style", type=Path, default=None, help="style file the denoiser was trained with (default: the shipped one)")
    p.add_argument("--judge", type=Path, default=None,
                   help="style file with an audio tower to measure APA in as well (default: the shipped judge, "
                        "models/judge/default.safetensors)")
    p.add_argument("--no-judge", action="store_true", help="measure in the style space and log-mel only")
    p.add_argument("--style-match", type=float, help="the engine's style_match for stems by reference (default: the engine's)")
    p.set_defaults(func=_eval_style)


    p = eval_models.add_parser("compare", help="paired fit differences of two accompaniment reports on the same pairs",
                               description=COMPARE_HELP, formatter_class=formatter)
    p.add_argument("candidate", type=Path, help="report directory (or its report.json) of the candidate")
    p.add_argument("baseline", type=Path, help="report directory (or its report.json) of the baseline")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.set_defaults(func=_eval_compare)

    p = eval_models.add_parser("tempo", help="the tempo and beat estimators against a data build's known beats",
                               description=TEMPO_HELP, formatter_class=formatter)
    p.add_argument("--data", required=True, type=Path, help="data build directory with MMA songs")
    p.add_argument("--out", required=True, type=Path, help="report directory")
    p.add_argument("--split", default="unseen", choices=SPLITS)
    p.add_argument("--count", type=int, default=100, help="songs to measure (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_eval_tempo)


def _eval_compare(args: argparse.Namespace) -> int:
    import json

    from backline.training.eval_suite import paired_difference

    reports = [json.loads((p / "report.json" if p.is_dir() else p).read_text()) for p in (args.candidate, args.baseline)]
    figures = {}
    print(f"{args.candidate} minus {args.baseline}, normalised fit (90 % paired bootstrap interval):")
    for instrument in reports[0]["instruments"]:
        if instrument not in reports[1]["instruments"]:
            continue
        try:
            figures[instrument] = paired_difference(*reports, instrument)
        except ValueError as error:
            raise SystemExit(f"backline eval compare: {error}") from None
        for key, v in figures[instrument].items():
            if key == "frechet":
                print(f"  {instrument:5s} Frechet distance {v['candidate']:.1f} against {v['baseline']:.1f}")
            else:
                print(f"  {instrument:5s} {key:16s} {v['difference']:+.3f} [{v['interval'][0]:+.3f}, "
                      f"{v['interval'][1]:+.3f}] over {v['pairs']} pairs")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


def _eval_tempo(args: argparse.Namespace) -> int:
    from backline.training.tempo_eval import evaluate_tempo, write_report

    report = evaluate_tempo(args.data, split=args.split, count=args.count, seed=args.seed)
    command = (f"backline eval tempo --data BUILD --split {args.split} --count {args.count} --seed {args.seed} "
               f"--out {args.out}")
    print(write_report(report, args.out, command))
    overall = report["overall"]
    print(f"{overall['count']} songs: tempo right {overall['right']:.2f}, half or double {overall['octave']:.2f}, "
          f"wrong {overall['wrong']:.2f}; beat F-measure {overall['beat_f_measure']:.2f} "
          f"({overall['beat_f_measure_tempo_given']:.2f} with the tempo given)")
    return 0


def _eval_controls(args: argparse.Namespace) -> int:
    from backline.engine.pipeline import load_bundle
    from backline.training.controls_report import run

    bundle = load_bundle(args.autoencoder, args.denoiser, prompt_prior_path=args.style)
    run(bundle, args.out, steps=args.steps, seed=args.seed)
    print((args.out / "report.md").read_text())
    return 0


def _eval_style(args: argparse.Namespace) -> int:
    from backline.engine.pipeline import load_bundle
    from backline.engine.style import DEFAULT_PRIOR_PATH, PromptPrior
    from backline.training.style_eval import DEFAULT_JUDGE_PATH, Judge, run

    bundle = load_bundle(args.autoencoder, args.denoiser, prompt_prior_path=args.style)
    judge_path = args.judge or DEFAULT_JUDGE_PATH
    judge = None if args.no_judge else Judge(PromptPrior.load(judge_path), path=str(judge_path))
    run(bundle, args.data, args.out, count=args.count, seconds=args.seconds, steps=args.steps,
        split=args.split, seed=args.seed, cfg_style=args.cfg_style, prior=PromptPrior.load(args.style or DEFAULT_PRIOR_PATH),
        judge=judge, style_match=args.style_match)
    print((args.out / "report.md").read_text())
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _command() -> str:
    return "backline " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "backline eval"


def _eval_transcription(args: argparse.Namespace) -> int:
    from backline.training.eval_suite import evaluate_transcription, transcription_markdown, write_report

    summary = evaluate_transcription(args.data, split=args.split, max_seconds=args.max_seconds, limit=args.limit,
                                     log=_log)
    summary["command"] = _command()
    md, js = write_report(args.out, "transcription", summary, transcription_markdown(summary, summary["command"]))
    print(f"wrote {md} and {js}")
    return 0


def _eval_accompaniment(args: argparse.Namespace) -> int:
    from backline.training.eval_suite import (accompaniment_markdown, evaluate_accompaniment, generate_stems,
                                              write_report)

    instruments = tuple(args.instruments or ("bass", "drums"))
    if args.generate:
        if args.generated is None:
            print("error: --generate needs --generated DIR to write the stems into", file=sys.stderr)
            return 2
        from backline.engine.pipeline import load_bundle
        from backline.engine.runtime import FRAME_GUIDANCE

        bundle = load_bundle(args.autoencoder, args.denoiser, onnx_dir=args.onnx_dir, precision=args.precision,
                             prompt_prior_path=args.style, few_step_path=args.few_step)
        generate_stems(args.data, args.generated, bundle, count=args.count, seconds=args.seconds,
                       offset_seconds=args.offset_seconds, instruments=instruments, steps=args.steps,
                       sampler=args.sampler,
                       seed=args.seed, split=args.split, cfg_context=args.cfg_context, cfg_style=args.cfg_style,
                       candidates=args.candidates, given=tuple(args.given), log=_log,
                       frame_guidance={key: getattr(args, key) for key in FRAME_GUIDANCE.values()
                                       if getattr(args, key) is not None})
    round_trip = None
    if args.generate or args.round_trip:
        from backline.engine.audio import resample
        from backline.engine.pipeline import load_bundle

        engine = load_bundle(args.autoencoder, args.denoiser, onnx_dir=args.onnx_dir, prompt_prior_path=args.style)

        def round_trip(audio, rate, instrument):
            mono = resample(audio[None], rate, engine.sample_rate)
            decoded = engine.backend.decode(engine.backend.encode(mono), instrument)[0, :mono.shape[1]]
            return resample(decoded[None], engine.sample_rate, rate)[0]
    summary = evaluate_accompaniment(args.data, generated_dir=args.generated, split=args.split, round_trip=round_trip,
                                     instruments=instruments, max_seconds=args.max_seconds, seed=args.seed,
                                     figure_dir=args.out, log=_log)
    summary["command"] = _command()
    md, js = write_report(args.out, "report", summary, accompaniment_markdown(summary, summary["command"]))
    print(f"wrote {md} and {js}")
    return 0
