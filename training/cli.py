"""Command-line tools of the training room: ``backline train|ship|eval``, and ``bench autoencoder``.

``register(subparsers)`` is called by ``backline.cli`` and must stay cheap: torch and the model code
are imported inside the command functions only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from backline.data.dataset import SPLITS
from backline.engine.cli import add_threads_argument
from backline.training import diffusion_cli

TRAIN_HELP = """\
Train the audio autoencoder on a data build (see `backline data build`).

Crops of --segment-seconds are drawn at random from the build's train split (mixes, stems and
contexts), silent crops skipped. The run directory receives config.json, checkpoint.pt (latest,
resumable), train.csv, validation.csv and curves.png. Stop at any time and continue with --resume.

example:
  backline train autoencoder --config tiny --data $BACKLINE_DATA/small --run runs/ae-tiny --steps 200
"""

SHIP_HELP = """\
Write a run's latest checkpoint as the fp16 model file the engine loads.

The latent scale (making latents unit-variance for diffusion) is measured on random crops of the
build's train split and stored in the file's metadata with the full config.

example:
  backline ship autoencoder --run runs/ae-default --to models/autoencoder/default.safetensors
"""

EVAL_HELP = """\
Measure reconstruction quality on held-out audio (test split; validation if the build has no test).

For bass stems, drum stems and mixes separately: log-mel L1, multi-resolution STFT distance and
SI-SDR of the autoencoder, and the same for the audio low-passed to 4 kHz and 8 kHz as references.
Writes report.md, report.json and spectrograms.png to --out.
"""

BENCH_HELP = """\
Time encode + decode of --seconds of audio on the CPU with torch and report the real-time factor
(seconds of audio per second of compute) and the peak memory of the process. Writes JSON to --out.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``ship``, ``eval`` and ``bench`` with their ``autoencoder`` subcommands."""
    formatter = argparse.RawDescriptionHelpFormatter

    train = subparsers.add_parser("train", help="train a model", description="Train a Backline model.")
    train_models = train.add_subparsers(dest="model", metavar="MODEL")
    p = train_models.add_parser("autoencoder", help="train the audio autoencoder", description=TRAIN_HELP,
                                formatter_class=formatter)
    p.add_argument("--config", default="default", help="registered config name (tiny, default) or a .json file")
    p.add_argument("--data", required=True, type=Path, help="data build directory (holds manifest.jsonl)")
    p.add_argument("--run", "--run-dir", dest="run", required=True, type=Path,
                   help="run directory for checkpoints, logs and plots (under torchrun write --run-dir: torchrun "
                        "reads --run as its own --run-path)")
    p.add_argument("--steps", type=int, default=10_000, help="total optimiser steps (default 10000)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint.pt")
    p.add_argument("--batch-size", type=int, default=8,
                   help="crops per step, the global batch: under torchrun each of N processes takes batch / N (default 8)")
    p.add_argument("--segment-seconds", type=float, default=1.0, help="crop length in seconds (default 1.0)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and crop sampling (default 0)")
    p.add_argument("--validate-every", type=int, default=250, help="steps between validation passes (default 250)")
    p.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (default 250)")
    p.add_argument("--time-limit-minutes", type=float, default=None,
                   help="stop (with a checkpoint) after this much wall time in this invocation")
    add_threads_argument(p, None, what="torch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from this model file (its config replaces --config; its latent scale is kept)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train the decoder only: the latents stay exactly those of --init-from, so a denoiser "
                        "trained on them stays valid")
    p.add_argument("--quiet-share", type=float, default=0.0,
                   help="share of crops turned down by 20-80 dB, so the decoder learns quiet passages and "
                        "silence (default 0)")
    p.add_argument("--pitch-weight", type=float, default=None,
                   help="weight of the latent pitch head's loss (the config's train_pitch_weight; with --init-from, "
                        "a fresh pitch head is added to the model it starts from, or its head dropped at 0)")
    p.add_argument("--stft-resolutions", type=int, nargs="+", default=None, metavar="N_FFT",
                   help="FFT sizes of the multi-resolution STFT loss (the config's train_stft_resolutions; "
                        "4096 and 8192 resolve bass semitones)")
    p.add_argument("--frequency-weight", type=float, default=None,
                   help="weight of the instantaneous-frequency loss (the config's train_frequency_weight)")
    p.set_defaults(func=_train_autoencoder)
    from backline.training import notes

    p = train_models.add_parser("notes", help="train the autoencoder's note head (the pitch-locked bass decode)",
                                description=notes.__doc__, formatter_class=formatter)
    p.add_argument("--init-from", required=True, type=Path, help="the autoencoder to add a note head to (kept frozen)")
    p.add_argument("--data", required=True, type=Path, help="data build directory (its bass stems are transcribed)")
    p.add_argument("--latents", required=True, type=Path, help="latents of that build by this autoencoder")
    p.add_argument("--extra", nargs=2, type=Path, action="append", default=[], metavar=("DATA", "LATENTS"),
                   help="another build and its latents whose train split is added (validation stays --data's)")
    p.add_argument("--run", "--run-dir", dest="run", required=True, type=Path,
                   help="run directory: cached targets, checkpoint, logs, summary (under torchrun write --run-dir)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint.pt")
    p.add_argument("--out", required=True, type=Path, help="where to write the autoencoder with its note head")
    p.add_argument("--steps", type=int, default=notes.NoteSettings.steps, help="optimiser steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=notes.NoteSettings.batch_size,
                   help="crops per step, the global batch: under torchrun each of N processes takes batch / N "
                        "(default %(default)s)")
    p.add_argument("--learning-rate", type=float, default=notes.NoteSettings.learning_rate,
                   help="peak AdamW learning rate (default %(default)s)")
    p.add_argument("--latent-noise", type=float, default=notes.NoteSettings.latent_noise,
                   help="std of the noise added to the scaled latents in training (default %(default)s)")
    p.add_argument("--validate-every", type=int, default=notes.NoteSettings.validate_every,
                   help="steps between validation passes (default %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=notes.NoteSettings.checkpoint_every,
                   help="steps between checkpoints (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--crop-latent-frames", type=int, default=notes.NoteSettings.crop_latent_frames,
                   help="latent frames per training crop (default %(default)s)")
    p.add_argument("--note-dim", type=int, default=notes.NoteSettings.note_dim, help="the head's width (default %(default)s)")
    p.add_argument("--note-blocks", type=int, default=notes.NoteSettings.note_blocks,
                   help="the head's residual blocks (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and crops (default 0)")
    p.add_argument("--time-limit-minutes", type=float, default=None, help="stop and write the model after this long")
    p.add_argument("--label-jobs", type=int, default=1, help="processes transcribing the targets (default 1)")
    p.add_argument("--labels", type=Path, action="append", default=[],
                   help="a `backline train labels` file of --data's basses (repeatable: e.g. train and validation), "
                        "used instead of transcribing them")
    add_threads_argument(p, None, what="torch")
    p.set_defaults(func=_train_notes)
    p = train_models.add_parser("labels", help="transcribe a build's bass stems into note labels (the denoiser's note "
                                "loss reads them: train diffusion --note-labels)")
    p.add_argument("--data", required=True, type=Path, help="data build directory")
    p.add_argument("--latents", required=True, type=Path, help="latents of that build (the labels match their frames)")
    p.add_argument("--autoencoder", type=Path, default=Path("models/autoencoder/default.safetensors"),
                   help="the autoencoder whose note head the loss uses (its STFT hop and note range)")
    p.add_argument("--out", required=True, type=Path, help="the labels file to write (.npz)")
    p.add_argument("--split", choices=SPLITS, default="train", help="the split to label (default train)")
    p.add_argument("--every", type=int, default=1, help="label every N-th bass stem only (default 1: all)")
    p.add_argument("--jobs", type=int, default=1, help="transcribing processes (default 1)")
    p.set_defaults(func=_train_labels)
    p = train_models.add_parser("synth-basses", help="the train basses again through random synthesizer voices, "
                                "encoded and labelled, for the note head (train notes --labels)")
    p.add_argument("--data", required=True, type=Path, help="data build directory (its MMA songs give the notes)")
    p.add_argument("--latents", required=True, type=Path, help="latents of that build (linked into --out)")
    p.add_argument("--autoencoder", type=Path, default=Path("models/autoencoder/default.safetensors"),
                   help="the autoencoder that encodes them (the latents' latent space)")
    p.add_argument("--out", required=True, type=Path, help="latent directory to write (links, the synthesized "
                   "basses' latents and labels-synth.npz)")
    p.add_argument("--voices", type=int, default=2, help="synthesized versions of each bass (default 2)")
    p.add_argument("--every", type=int, default=1, help="every N-th train bass only (default 1: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    p.set_defaults(func=_train_synth_basses)
    diffusion_cli.register_train(train_models, formatter)
    from backline.training import style_cli

    style_cli.register_train(train_models, formatter)

    ship = subparsers.add_parser("ship", help="write a trained model for the engine",
                                 description="Write a trained checkpoint as a shipped model file.")
    ship_models = ship.add_subparsers(dest="model", metavar="MODEL")
    p = ship_models.add_parser("autoencoder", help="ship the audio autoencoder", description=SHIP_HELP,
                               formatter_class=formatter)
    p.add_argument("--run", required=True, type=Path, help="run directory written by `backline train autoencoder`")
    p.add_argument("--to", required=True, type=Path, help="model file to write (.safetensors, fp16)")
    p.add_argument("--data", type=Path, default=None, help="build for measuring the latent scale (default: the run's)")
    p.add_argument("--crops", type=int, default=64, help="training crops used to measure the latent scale")
    p.add_argument("--version", default=None, help="model version string (default: package version + step)")
    p.set_defaults(func=_ship_autoencoder)
    diffusion_cli.register_ship(ship_models)
    style_cli.register_ship(ship_models)

    evaluate = subparsers.add_parser("eval", help="measure a model", description="Measure a Backline model.")
    eval_models = evaluate.add_subparsers(dest="model", metavar="MODEL")
    p = eval_models.add_parser("autoencoder", help="reconstruction quality of the autoencoder",
                               description=EVAL_HELP, formatter_class=formatter)
    p.add_argument("--model", required=True, type=Path, help="model file (.safetensors)")
    p.add_argument("--data", required=True, type=Path, help="data build directory")
    p.add_argument("--out", required=True, type=Path, help="report directory")
    p.add_argument("--max-files", type=int, default=12, help="files per category (default 12)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="seconds taken from the middle of each file (default 30)")
    p.add_argument("--split", choices=SPLITS, default=None,
                   help="the split to measure on (default: test, else validation); unseen: held-out sounds and styles")
    add_threads_argument(p, None, what="torch")
    p.set_defaults(func=_eval_autoencoder)
    from backline.training import eval_cli

    eval_cli.register_eval(eval_models, formatter)



def register_bench(bench_models: argparse._SubParsersAction) -> None:
    """``backline bench autoencoder`` (``backline.bench_cli`` gathers every room's benchmarks)."""
    p = bench_models.add_parser("autoencoder", help="encode + decode speed of the autoencoder",
                                description=BENCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="model file (.safetensors)")
    p.add_argument("--seconds", type=float, default=60.0, help="audio duration in seconds (default 60)")
    add_threads_argument(p, 2, what="torch")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported (default 3)")
    p.add_argument("--out", required=True, type=Path, help="JSON file to write")
    p.set_defaults(func=_bench_autoencoder)
    p = bench_models.add_parser("latents", help="encoding speed of a data build's pairs with 1 and N workers",
                                description="Encode the first VARIANTS variants of a build into a temporary folder with "
                                            "each worker count; seconds of pairs (context and stem) per second of wall "
                                            "time, written to a JSON file.")
    p.add_argument("--data", required=True, type=Path, help="data build directory")
    p.add_argument("--autoencoder", type=Path, default=None, help="autoencoder file (default: the shipped one)")
    p.add_argument("--variants", type=int, default=16)
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    p.add_argument("--cluster", metavar="ADDRESS", help="encode on a Dask cluster (`local`, or a scheduler address)")
    p.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "data" / "benchmarks" / "encode.json")
    p.set_defaults(func=_bench_latents)


def _bench_latents(args: argparse.Namespace) -> int:
    from backline.models.autoencoder import DEFAULT_MODEL_PATH
    from backline.training.latents import bench_encode

    figures = bench_encode(args.data, args.autoencoder or DEFAULT_MODEL_PATH, variants=args.variants, jobs=args.jobs,
                           cluster=args.cluster)
    for row in figures["results"]:
        print(f"{row['jobs']} worker(s): {row['pairs']} pairs, {row['pair_seconds']} s in {row['wall_seconds']} s: "
              f"{row['x_realtime_wall']}x real time")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1) + "\n")
    print(args.out)
    return 0


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _train_autoencoder(args: argparse.Namespace) -> int:
    from backline.models.autoencoder import resolve_config
    from backline.training.autoencoder import TrainSettings, train

    _set_threads(args.threads)
    if args.freeze_encoder and args.init_from is None:
        raise SystemExit("--freeze-encoder needs --init-from: the model whose encoder to keep")
    if args.init_from is not None:
        from backline.models.autoencoder import load_autoencoder

        config = load_autoencoder(args.init_from)[0].config
    else:
        config = resolve_config(args.config)
    overrides = {name: value for name, value in (
        ("train_pitch_weight", args.pitch_weight), ("train_frequency_weight", args.frequency_weight),
        ("train_stft_resolutions", tuple(args.stft_resolutions) if args.stft_resolutions else None)) if value is not None}
    if overrides:  # training-only settings: the network, hence --init-from's weights, are unchanged
        import dataclasses

        config = dataclasses.replace(config, **overrides)
    settings = TrainSettings(
        steps=args.steps, batch_size=args.batch_size, segment_seconds=args.segment_seconds,
        learning_rate=args.learning_rate, seed=args.seed, validate_every=args.validate_every,
        checkpoint_every=args.checkpoint_every, time_limit_minutes=args.time_limit_minutes,
        init_from=str(args.init_from) if args.init_from else None, freeze_encoder=args.freeze_encoder,
        quiet_share=args.quiet_share,
    )
    summary = train(config, args.data, args.run, settings, resume=args.resume, progress=not args.quiet)
    if summary["rank"] == 0:  # under torchrun, one summary
        print(json.dumps(summary, indent=2))
    return 0


def _train_labels(args: argparse.Namespace) -> int:
    from backline.models.autoencoder import load_autoencoder
    from backline.training.notes import NoteSettings, build_labels, write_label_cache

    config = load_autoencoder(args.autoencoder)[0].config  # without a note head yet: the head's default range
    labels = build_labels(args.data, args.latents, stft_hop=config.stft_hop_length,
                          frames_per_latent=config.frames_per_latent,
                          lowest_midi=config.note_lowest_midi or NoteSettings.note_lowest_midi,
                          count=config.note_count or NoteSettings.note_count, splits=(args.split,), every=args.every,
                          jobs=args.jobs)
    key = json.dumps({"build": str(args.data.resolve()), "latents": str(args.latents.resolve()), "split": args.split,
                      "every": args.every})
    print(f"wrote {write_label_cache(args.out, key, labels)}: {len(labels)} bass stems")
    return 0


def _train_synth_basses(args: argparse.Namespace) -> int:
    from backline.models.autoencoder import load_autoencoder
    from backline.training.notes import NoteSettings
    from backline.training.synth_bass import synth_basses

    config = load_autoencoder(args.autoencoder)[0].config
    labels = synth_basses(args.data, args.latents, args.autoencoder, args.out, voices=args.voices, every=args.every,
                          seed=args.seed, jobs=args.jobs, lowest_midi=config.note_lowest_midi or NoteSettings.note_lowest_midi,
                          count=config.note_count or NoteSettings.note_count)
    print(f"wrote {labels}: train notes --latents {args.out} --labels {labels} (and the real basses' labels)")
    return 0


def _train_notes(args: argparse.Namespace) -> int:
    from backline.training.notes import NoteSettings, train_notes

    _set_threads(args.threads)
    settings = NoteSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                            latent_noise=args.latent_noise, validate_every=args.validate_every, seed=args.seed,
                            checkpoint_every=args.checkpoint_every, crop_latent_frames=args.crop_latent_frames,
                            note_dim=args.note_dim, note_blocks=args.note_blocks)
    summary = train_notes(args.init_from, args.data, args.latents, args.run, args.out, settings,
                          extra=tuple(tuple(pair) for pair in args.extra), time_limit_minutes=args.time_limit_minutes,
                          resume=args.resume, progress=not args.quiet, label_jobs=args.label_jobs,
                          label_files=tuple(args.labels))
    if summary["rank"] == 0:  # under torchrun, one summary
        print(json.dumps(summary, indent=2))
    return 0


def _ship_autoencoder(args: argparse.Namespace) -> int:
    from backline.training.autoencoder import ship

    summary = ship(args.run, args.to, build_dir=args.data, crops=args.crops, version=args.version)
    print(json.dumps(summary, indent=2))
    return 0


def _eval_autoencoder(args: argparse.Namespace) -> int:
    from backline.training.autoencoder_eval import evaluate

    _set_threads(args.threads)
    report = evaluate(args.model, args.data, args.out, max_files=args.max_files, max_seconds=args.max_seconds,
                      split=args.split)
    print((Path(args.out) / "report.md").read_text())
    return 0 if report["categories"] else 1


def _bench_autoencoder(args: argparse.Namespace) -> int:
    from backline.training.autoencoder_eval import benchmark

    _set_threads(args.threads)
    result = benchmark(args.model, duration_seconds=args.seconds, repeats=args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['duration_seconds']:.0f} s of audio: encode {result['encode_seconds']:.3f} s + decode "
          f"{result['decode_seconds']:.3f} s = {result['total_seconds']:.3f} s, "
          f"{result['real_time_factor']:.1f}x real time, peak RSS {result['peak_rss_mib']:.0f} MiB", file=sys.stdout)
    return 0
