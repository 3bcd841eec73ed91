"""``backline train latents|diffusion`` and ``backline ship diffusion``, added to the training room's parsers."""

from __future__ import annotations

import argparse
from pathlib import Path

from backline.engine.cli import add_threads_argument

LATENTS_HELP = """\
Encode every (context, target) pair of a data build with an autoencoder, for diffusion training.

Writes OUT/<variant>__<instrument>.npz (float16 latents) and OUT/index.jsonl; pairs already encoded
are kept, so an interrupted run continues.

example:
  backline train latents --data $BACKLINE_DATA/full --out $BACKLINE_DATA/latents
"""

DIFFUSION_HELP = """\
Train the accompaniment denoiser (EDM, 1-D U-Net) on latents from `backline train latents`.

One model serves bass and drums (the instrument is a condition). Context and style are dropped at
random so each gets its own guidance scale. The run directory receives config.json, checkpoint.pt
(model, EMA, optimiser, step; --resume continues), train.csv, validation.csv and curves.png.

example:
  backline train diffusion --config tiny --latents LATENTS --run runs/diffusion-tiny --steps 200
"""


def register_train(train_models: argparse._SubParsersAction, formatter) -> None:
    p = train_models.add_parser("latents", help="encode a data build's pairs into latents", description=LATENTS_HELP,
                                formatter_class=formatter)
    p.add_argument("--data", required=True, type=Path, help="data build directory")
    p.add_argument("--out", required=True, type=Path, help="latent directory (outside the repository)")
    p.add_argument("--autoencoder", type=Path, default=None, help="autoencoder file (default: the shipped one)")
    p.add_argument("--soundfont", action="append", dest="soundfonts", help="only variants rendered with this soundfont file name")
    p.add_argument("--max-seconds", type=float, default=None, help="encode at most this many seconds of each pair")
    p.add_argument("--jobs", type=int, default=1, help="parallel encoding processes (with --cluster local: Dask workers)")
    p.add_argument("--cluster", metavar="ADDRESS", help="encode on a Dask cluster: a scheduler address, or `local`")
    add_threads_argument(p, None, what="torch")
    p.set_defaults(func=_latents)

    p = train_models.add_parser("diffusion", help="train the accompaniment denoiser", description=DIFFUSION_HELP,
                                formatter_class=formatter)
    p.add_argument("--config", default="default", help="registered config (tiny, default) or a .json file")
    p.add_argument("--latents", required=True, type=Path, help="latent directory from `backline train latents`")
    p.add_argument("--run", "--run-dir", dest="run", required=True, type=Path,
                   help="run directory (under torchrun write --run-dir: torchrun reads --run as its own --run-path)")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=16,
                   help="the global batch: under torchrun each of N processes takes batch / N of it (default 16)")
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--instrument", action="append", dest="instruments", choices=("bass", "drums"),
                   help="train on this instrument only (repeatable; default both)")
    p.add_argument("--style", type=Path, default=None, help="style file (`backline train style`) whose audio tower "
                   "makes the style embeddings; without it, latent statistics")
    p.add_argument("--init-from", type=Path, default=None, help="start from this denoiser file's weights (same config)")
    p.add_argument("--style-seconds", type=float, nargs=2, default=None, metavar=("SHORTEST", "LONGEST"),
                   help="length range of the target's sub-segment the style embedding comes from (default 0.75 3)")
    p.add_argument("--note-weight", type=float, default=0.0,
                   help="weight of the note loss (the note head's reading of the denoised bass vs its notes)")
    p.add_argument("--note-autoencoder", type=Path, default=None, help="autoencoder with the note head (note loss)")
    p.add_argument("--note-labels", type=Path, action="append", default=[],
                   help="labels of these latents' basses: `backline train labels` or a `train notes` run's "
                        "labels*.npz (note loss; repeatable)")
    p.add_argument("--note-sigma-max", type=float, default=1.0, help="the note loss only below this noise level")
    p.add_argument("--distill-from", type=Path, default=None, metavar="TEACHER",
                   help="consistency distillation of this denoiser file (guided at its recorded scales) into a "
                        "few-step student of its config, started from its weights (training/distill.py)")
    p.add_argument("--grid-points", type=int, default=40, help="distillation: noise levels of the teacher's steps")
    p.add_argument("--teacher-solver", choices=("heun", "euler"), default="heun",
                   help="distillation: the teacher's ODE step (heun: two guided evaluations, euler: one)")
    p.add_argument("--distill-target", choices=("student", "ema"), default="student",
                   help="distillation: whose estimate at the lower noise level the student is pulled towards: itself "
                        "(default) or its EMA (Song et al. 2023's target network)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validate-every", type=int, default=250)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--time-limit-minutes", type=float, default=None, help="stop with a checkpoint after this wall time")
    add_threads_argument(p, None, what="torch")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_diffusion)


def register_ship(ship_models: argparse._SubParsersAction) -> None:
    p = ship_models.add_parser("diffusion", help="ship the denoiser's EMA weights (fp16)")
    p.add_argument("--run", type=Path, help="training run to ship; without it, --to is an existing file whose "
                   "recorded default guidance is updated (same weights, same version)")
    p.add_argument("--to", required=True, type=Path)
    p.add_argument("--version", help="model version string stored in the file (with --run)")
    p.add_argument("--latents", type=Path, help="latent directory, to record which autoencoder was used")
    p.add_argument("--cfg-context", type=float, help="default context guidance the engine uses with this model")
    p.add_argument("--cfg-style", type=float, help="default style guidance the engine uses with this model")
    p.add_argument("--cfg-tempo", type=float, help="default beat-grid guidance (a denoiser told the beat)")
    p.add_argument("--cfg-chords", type=float, help="default harmony guidance (a denoiser told the chords)")
    p.add_argument("--instrument-cfg", action="append", default=[], metavar="INSTRUMENT:NAME=VALUE",
                   help="a default for one instrument only, e.g. drums:cfg_context=9 (repeatable)")
    p.add_argument("--default-steps", type=int, help="the steps the engine takes with this model unless asked "
                   "otherwise (a distilled student: a few)")
    p.add_argument("--default-sampler", choices=("euler", "heun", "dpmpp_2m"),
                   help="the sampler the engine uses with this model unless asked otherwise")
    p.add_argument("--default-candidates", type=int,
                   help="the takes of a bass the engine samples unless asked otherwise (the most in key kept)")
    p.add_argument("--distilled-from", type=Path, metavar="TEACHER",
                   help="record that this file was distilled from TEACHER's denoiser (a run made with "
                        "--distill-from records it by itself); the engine pairs a few-step file only with its teacher")
    p.add_argument("--few-step-for", action="append", choices=("bass", "drums", "none"), metavar="INSTRUMENT",
                   help="a distilled student: the instruments whose default sampler it is (as good as its teacher: "
                        "measure with `backline eval compare`; repeatable; --few-step-for none: no instrument)")
    p.set_defaults(func=_ship)


def _threads(count: int | None) -> None:
    if count:
        import torch

        torch.set_num_threads(count)


def _latents(args: argparse.Namespace) -> int:
    import sys

    from backline.models.autoencoder import DEFAULT_MODEL_PATH
    from backline.training.latents import encode_build

    _threads(args.threads)
    encoded = encode_build(args.autoencoder or DEFAULT_MODEL_PATH, args.data, args.out,
                           soundfonts=tuple(args.soundfonts) if args.soundfonts else None, max_seconds=args.max_seconds,
                           jobs=args.jobs, cluster=args.cluster, progress=lambda i, n: print(f"\r{i}/{n}", end="", file=sys.stderr, flush=True))
    print(f"\n{args.out}: {encoded} pairs encoded")
    return 0


def _diffusion(args: argparse.Namespace) -> int:
    import json

    from backline.models.diffusion import INSTRUMENTS, resolve_config
    from backline.training.diffusion import TrainOptions, train

    _threads(args.threads)
    config = resolve_config(args.config)
    if args.distill_from:  # the student has the teacher's config
        from backline.models.diffusion import load_denoiser

        config = load_denoiser(args.distill_from)[0].config
    options = TrainOptions(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           validate_every=args.validate_every, checkpoint_every=args.checkpoint_every, seed=args.seed,
                           time_limit_minutes=args.time_limit_minutes,
                           instruments=tuple(args.instruments) if args.instruments else INSTRUMENTS,
                           style_file=str(args.style) if args.style else None,
                           init_from=str(args.init_from) if args.init_from else None,
                           note_weight=args.note_weight, note_sigma_max=args.note_sigma_max,
                           note_autoencoder=str(args.note_autoencoder) if args.note_autoencoder else None,
                           note_labels=tuple(str(p) for p in args.note_labels),
                           distill_from=str(args.distill_from) if args.distill_from else None,
                           grid_points=args.grid_points, teacher_solver=args.teacher_solver,
                           distill_target=args.distill_target,
                           **_style_frames(args.style_seconds, config.latent_rate_hz))
    summary = train(config, args.latents, args.run, options, resume=args.resume,
                    progress=not args.quiet)
    if summary.get("rank", 0) == 0:  # under torchrun, one summary
        print(json.dumps(summary))
    return 0


def _style_frames(seconds: list[float] | None, latent_rate_hz: float) -> dict:
    if seconds is None:
        return {}
    shortest, longest = (max(1, int(round(s * latent_rate_hz))) for s in seconds)
    if shortest > longest:
        raise SystemExit(f"--style-seconds {seconds[0]} {seconds[1]}: the shortest is longer than the longest")
    return {"style_frames": (shortest, longest)}


def parse_guidance(scales: dict[str, float | None], per_instrument: list[str]) -> dict:
    """The guidance record from the command line: ``scales`` by DEFAULT_GUIDANCE's names (None: not given);
    ``per_instrument`` items read ``drums:cfg_context=9``."""
    from backline.engine.runtime import DEFAULT_GUIDANCE
    from backline.models.diffusion import INSTRUMENTS

    guidance: dict = {k: v for k, v in scales.items() if v is not None}
    for item in per_instrument:
        try:
            instrument, assignment = item.split(":", 1)
            name, value = assignment.split("=", 1)
            value = float(value)
        except ValueError:
            raise SystemExit(f"--instrument-cfg {item!r}: expected INSTRUMENT:NAME=VALUE, e.g. drums:cfg_context=9")
        if instrument not in INSTRUMENTS or name not in DEFAULT_GUIDANCE:
            raise SystemExit(f"--instrument-cfg {item!r}: the instrument is one of {', '.join(INSTRUMENTS)}, "
                             f"the name one of {', '.join(DEFAULT_GUIDANCE)}")
        guidance.setdefault("instruments", {}).setdefault(instrument, {})[name] = value
    return guidance


def _ship(args: argparse.Namespace) -> int:
    from backline.training.diffusion import set_guidance, ship

    from backline.engine.runtime import DEFAULT_GUIDANCE

    guidance = parse_guidance({name: getattr(args, name) for name in DEFAULT_GUIDANCE}, args.instrument_cfg)
    if args.default_candidates is not None and args.default_candidates < 1:
        raise SystemExit("--default-candidates: at least 1 take")
    sampling = {k: v for k, v in (("steps", args.default_steps), ("sampler", args.default_sampler),
                                  ("candidates", args.default_candidates)) if v is not None}
    if args.few_step_for is not None:
        sampling["few_step_for"] = sorted(set(args.few_step_for) - {"none"})
    teacher = None
    if args.distilled_from is not None:
        from backline.models.diffusion import load_denoiser

        teacher = load_denoiser(args.distilled_from)[1].get("backline_version")
    if args.run is None:
        if not guidance and not sampling and teacher is None:
            raise SystemExit("without --run, give the defaults to record: --cfg-context, --cfg-style, --cfg-tempo, "
                             "--cfg-chords, --instrument-cfg, --default-steps, --default-sampler, --default-candidates "
                             "--few-step-for or --distilled-from")
        print(set_guidance(args.to, guidance, sampling, distilled_from=teacher))
        return 0
    if args.version is None:
        raise SystemExit("--version is required with --run")
    print(ship(args.run, args.to, version=args.version, latent_dir=args.latents, guidance=guidance or None,
               sampling=sampling or None, distilled_from=teacher))
    return 0
