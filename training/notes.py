"""The autoencoder's note head: the bass's notes read from its latents, for the pitch-locked decode.

    backline train notes --init-from models/autoencoder/default.safetensors --latents $LATENTS \\
        --data $BACKLINE_DATA/full40 --out models/autoencoder/default.safetensors --run $RUN \\
        [--extra $BACKLINE_DATA/full40x $LATENTS_X]   # more train stems; validation stays --data's

Targets: the bass target stems of the data build, transcribed with the engine's bass transcription
(``engine.transcribe.transcribe_bass``: basic-pitch's note model, one note at a time) into one class per
STFT frame (0: no note; ``i``: MIDI ``note_lowest_midi + i - 1``). Inputs: the same stems' latents,
precomputed with this autoencoder (``backline data latents``), so the encoder is never run and the
autoencoder itself is frozen: only ``note_head`` learns, and the latent space is unchanged. Gaussian
noise on the latents in training (``latent_noise``) stands in for the denoiser's imperfect latents.

The run directory gets the cached targets (``labels.npz``, reused when present), ``checkpoint.pt`` (the head,
optimiser and random states; ``--resume`` continues from it), ``training.json``, ``train.csv``,
``validation.csv`` and ``summary.json``; ``out`` gets the autoencoder with its note head, versioned
``<init version>+notes<steps>``. Validation reports, over whole validation-split stems: frame accuracy,
note accuracy and pitch-class accuracy on frames that have a note, and voicing accuracy.

Under ``torchrun`` every process draws each global batch (crops and noise) from the run's seeded generators and
keeps its rows (training/distributed.py); rank 0 transcribes the targets, validates and writes everything.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backline.training.run import RunSettings

NOTE_COUNT = 49  # MIDI 24 (C1) to 72 (C5), the bass transcription's range


@dataclass(frozen=True)
class NoteSettings(RunSettings):
    """A note-head run: the shared run settings (training/run.py) and its own (recorded in summary.json)."""

    steps: int = 3000
    batch_size: int = 32
    crop_latent_frames: int = 64
    latent_noise: float = 0.1  # std of noise added to the (unit-variance) scaled latents in training
    note_lowest_midi: int = 24
    note_count: int = NOTE_COUNT
    note_dim: int = 192  # the head's width and depth (the autoencoder config's note_dim, note_blocks)
    note_blocks: int = 3


def frame_labels(notes, frames: int, *, sample_rate: int, hop: int, lowest_midi: int, count: int) -> np.ndarray:
    """Notes -> the class of each STFT frame (frame t centred at ``t * hop + hop / 2`` samples); 0: no note.
    Notes outside the range count as no note."""
    centres = (np.arange(frames) * hop + hop / 2) / sample_rate
    labels = np.zeros(frames, np.int64)
    for note in notes:
        if lowest_midi <= note.pitch < lowest_midi + count:
            labels[(centres >= note.start_seconds) & (centres < note.end_seconds)] = note.pitch - lowest_midi + 1
    return labels


def _stem_labels(job: tuple) -> tuple[dict, np.ndarray]:
    """One bass stem's frame labels (a worker of ``build_labels``' pool)."""
    from backline.engine.audio import read_audio, to_mono
    from backline.engine.transcribe import transcribe_bass

    entry, latents_dir, target, stft_hop, frames_per_latent, lowest_midi, count = job
    latent_frames = np.load(Path(latents_dir) / entry["file"])["target"].shape[-1]
    audio, rate = read_audio(target)
    return entry, frame_labels(transcribe_bass(to_mono(audio)[0], rate), latent_frames * frames_per_latent,
                               sample_rate=rate, hop=stft_hop, lowest_midi=lowest_midi, count=count)


def build_labels(build_dir: Path, latents_dir: Path, *, stft_hop: int, frames_per_latent: int, lowest_midi: int,
                 count: int, progress: bool = True, splits: tuple[str, ...] | None = None, every: int = 1,
                 jobs: int = 1) -> dict[str, dict]:
    """Every bass entry of ``latents_dir``'s index (of ``splits`` only, every ``every``-th) with its split, file and
    frame labels, keyed by variant id; ``jobs`` processes transcribe (data/scheduling.py's pool)."""
    from backline.data.dataset import read_manifest
    from backline.data.scheduling import tasks

    records = {r["variant_id"]: r for r in read_manifest(build_dir)}
    entries = [json.loads(line) for line in (latents_dir / "index.jsonl").read_text().splitlines() if line.strip()]
    entries = [e for e in entries if e["instrument"] == "bass" and e["variant_id"] in records
               and (splits is None or e["split"] in splits)][::every]
    work = [(e, str(latents_dir), str(build_dir / records[e["variant_id"]]["pairs"]["bass"]["target"]), stft_hop,
             frames_per_latent, lowest_midi, count) for e in entries]
    out: dict[str, dict] = {}
    with tasks(jobs) as run:
        for index, (entry, labels) in enumerate(run(_stem_labels, work)):
            out[entry["variant_id"]] = {"split": entry["split"], "file": entry["file"], "labels": labels}
            if progress and (index + 1) % 25 == 0:
                print(f"labels: {index + 1}/{len(entries)} stems", flush=True)
    return out


def write_label_cache(path: str | Path, key: str, labels: dict[str, dict]) -> Path:
    """``build_labels``' result as a ``labels*.npz`` cache (``read_label_cache`` reads it)."""
    np.savez(path, key=key, entries=json.dumps({v: {"split": d["split"], "file": d["file"]} for v, d in labels.items()}),
             **{v: d["labels"] for v, d in labels.items()})
    return Path(path)


def read_label_cache(path: str | Path) -> tuple[str, dict[str, dict]]:
    """A ``labels*.npz`` cache: its key (build, latents and classes it was made for) and, by variant id, each bass
    entry's split, latent file and frame labels."""
    data = np.load(path, allow_pickle=False)
    entries = json.loads(str(data["entries"]))
    key = str(data["key"]) if "key" in data.files else ""
    return key, {v: {**entry, "labels": data[v]} for v, entry in entries.items()}


def _load_labels(run_dir: Path, build_dir: Path, latents_dir: Path, config, settings: NoteSettings,
                 cache_name: str = "labels.npz", jobs: int = 1) -> dict[str, dict]:
    """The frame labels of the train and validation basses, from the run's cache when it was made for the same
    build, latents and classes; else transcribed by ``jobs`` processes."""
    key = json.dumps({"build": str(Path(build_dir).resolve()), "latents": str(Path(latents_dir).resolve()),
                      "stft_hop": config.stft_hop_length, "lowest_midi": settings.note_lowest_midi,
                      "count": settings.note_count})
    cache = run_dir / cache_name
    if cache.is_file():
        cached_key, entries = read_label_cache(cache)
        if cached_key == key:
            return entries
    labels = build_labels(build_dir, latents_dir, stft_hop=config.stft_hop_length,
                          frames_per_latent=config.frames_per_latent, lowest_midi=settings.note_lowest_midi,
                          count=settings.note_count, splits=("train", "validation"), jobs=jobs)
    write_label_cache(cache, key, labels)
    return labels


def scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Frame accuracy, note / pitch-class accuracy on frames with a note, voicing accuracy (classes on axis 0)."""
    predicted = np.argmax(logits, axis=0)
    voiced = labels > 0
    result = {"frame_accuracy": float(np.mean(predicted == labels)),
              "voicing_accuracy": float(np.mean((predicted > 0) == voiced))}
    if voiced.any():
        result["note_accuracy"] = float(np.mean(predicted[voiced] == labels[voiced]))
        result["pitch_class_accuracy"] = float(np.mean(
            (predicted[voiced] > 0) & ((predicted[voiced] - labels[voiced]) % 12 == 0)))
    return result


def train_notes(init_from: Path, build_dir: Path, latents_dir: Path, run_dir: Path, out: Path,
                settings: NoteSettings = NoteSettings(), *, extra: tuple[tuple[Path, Path], ...] = (),
                time_limit_minutes: float | None = None, resume: bool = False, progress: bool = True,
                label_jobs: int = 1, label_files: tuple[Path, ...] = ()) -> dict:
    """Train (or, with ``resume``, continue) the note head of ``init_from``'s autoencoder (the rest frozen); write
    it to ``out``.

    ``extra``: more (build, latents) pairs whose train split is trained on too (their labels cached as
    ``labels-extra<i>.npz``); validation is always ``build_dir``'s validation split, so runs compare.
    ``label_files``: ``backline train labels`` files of ``build_dir``'s basses, used instead of transcribing them."""
    import torch
    from torch.nn import functional as F

    from backline.engine.runtime import latent_space_of
    from backline.models.autoencoder import Autoencoder, load_autoencoder, save_autoencoder
    from backline.training import distributed
    from backline.training.latents import require_latent_space

    processes = distributed.start()
    main = processes.main
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / "checkpoint.pt"
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint_path.exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a checkpoint; pass --resume or pick a new run directory")
    if time_limit_minutes is None:
        time_limit_minutes = settings.time_limit_minutes
    base, metadata = load_autoencoder(init_from)
    init_version = metadata.get("backline_version")
    config = dataclasses.replace(base.config, note_count=settings.note_count, note_lowest_midi=settings.note_lowest_midi,
                                 note_dim=settings.note_dim, note_blocks=settings.note_blocks,
                                 latent_space=latent_space_of(base.config.latent_space, init_version))
    sources = [(Path(build_dir), Path(latents_dir)), *((Path(b), Path(l)) for b, l in extra)]
    for _, latents_path in sources:
        require_latent_space(latents_path, config.latent_space, init_from)
    with torch.random.fork_rng(devices=[]):  # a seeded head without touching the caller's global RNG
        torch.manual_seed(settings.seed)
        model = Autoencoder(config)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not key.startswith("note_head.") for key in missing):
        raise ValueError(f"{init_from}: weights do not fit the note-head model ({unexpected or missing})")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("note_head."))
    head = model.note_head

    data = {"train": [], "validation": []}
    for index, (build_path, latents_path) in enumerate(sources):
        cache_name = "labels.npz" if index == 0 else f"labels-extra{index}.npz"
        if not main:
            processes.barrier()  # rank 0 transcribes the stems and writes the cache first
        if index == 0 and label_files:
            labels = {v: e for path in label_files for v, e in read_label_cache(path)[1].items()}
        else:
            labels = _load_labels(run_dir, build_path, latents_path, config, settings, cache_name, label_jobs)
        if main:
            processes.barrier()
        for entry in labels.values():
            if entry["split"] == "train" or (entry["split"] == "validation" and index == 0):
                latents = np.load(latents_path / entry["file"])["target"].astype(np.float32) / config.latent_scale
                data[entry["split"]].append((latents, entry["labels"]))
    train_set = [(x, y) for x, y in data["train"] if x.shape[-1] >= settings.crop_latent_frames]
    if not train_set or not data["validation"]:
        raise ValueError(f"{latents_dir}: no train or validation bass latents long enough to train on")
    noise = settings.latent_noise / config.latent_scale  # the setting is in scaled-latent units
    fpl, crop = config.frames_per_latent, settings.crop_latent_frames
    rows = processes.rows(settings.batch_size)
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    optimiser = torch.optim.AdamW(head.parameters(), lr=settings.learning_rate, weight_decay=0.01)

    def warmup_cosine(step: int) -> float:
        return min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(step, settings.steps) / settings.steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine)
    step, elapsed_before = 0, 0.0
    if resume:
        if not checkpoint_path.exists():
            raise FileNotFoundError(f"{run_dir}: no checkpoint.pt to resume from")
        state = torch.load(checkpoint_path, weights_only=True)
        head.load_state_dict(state["head"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(json.loads(state["schedule"]))
        step, elapsed_before = int(state["step"]), float(state["elapsed_seconds"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        generator.set_state(state["torch_rng"])
    loss_module = processes.wrap(distributed.LossModule(model, lambda m, x, y: F.cross_entropy(m.decode_notes(x), y)))

    def save_checkpoint() -> None:
        distributed.save_checkpoint(processes, {
            "head": head.state_dict(), "optimiser": optimiser.state_dict(), "schedule": json.dumps(schedule.state_dict()),
            "step": step, "elapsed_seconds": elapsed_before + time.monotonic() - started,
            "numpy_rng": json.dumps(rng.bit_generator.state), "torch_rng": generator.get_state()}, checkpoint_path)

    def validate() -> dict[str, float]:
        head.eval()
        logits, targets = [], []
        with torch.inference_mode():
            for latents, frame_labels_ in data["validation"]:
                logits.append(model.decode_notes(torch.from_numpy(latents)[None].to(processes.device))[0].cpu().numpy())
                targets.append(frame_labels_)
        head.train()
        return scores(np.concatenate(logits, axis=1), np.concatenate(targets))

    if main:
        distributed.record_run(run_dir, settings, processes, step)
    train_log = (run_dir / "train.csv").open("a" if resume else "w", newline="") if main else None
    validation_log = (run_dir / "validation.csv").open("a" if resume else "w", newline="") if main else None
    train_writer = csv.writer(train_log) if main else None
    if main and not resume:
        train_writer.writerow(["step", "elapsed_seconds", "loss"])
    validation_writer = None
    started = time.monotonic()
    head.train()
    validation = {}
    while step < settings.steps:
        batch_x, batch_y = [], []
        for index in rng.integers(len(train_set), size=settings.batch_size):
            latents, frame_labels_ = train_set[index]
            start = int(rng.integers(latents.shape[-1] - crop + 1))
            batch_x.append(latents[:, start:start + crop])
            batch_y.append(frame_labels_[start * fpl:(start + crop) * fpl])
        x = torch.from_numpy(np.stack(batch_x))
        x = x + noise * torch.randn(x.shape, generator=generator)  # the global batch's, then our rows
        y = torch.from_numpy(np.stack(batch_y))
        loss = loss_module(x[rows].to(processes.device), y[rows].to(processes.device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        step += 1
        loss_value = processes.mean(loss.item())  # the global batch's
        elapsed = elapsed_before + time.monotonic() - started
        if main and step % 10 == 0:
            train_writer.writerow([step, round(elapsed, 1), loss_value])
        out_of_time = processes.any(time_limit_minutes is not None
                                    and time.monotonic() - started > 60 * time_limit_minutes)
        if main and (step % settings.validate_every == 0 or step == settings.steps or out_of_time):
            validation = validate()
            if validation_writer is None:
                validation_writer = csv.DictWriter(validation_log, ["step", "elapsed_seconds", *validation])
                if not resume:
                    validation_writer.writeheader()
            validation_writer.writerow({"step": step, "elapsed_seconds": round(elapsed, 1), **validation})
            validation_log.flush()
            train_log.flush()
            if progress:
                print(f"step {step}: loss {loss_value:.3f}, " + ", ".join(f"{k} {v:.3f}" for k, v in validation.items()),
                      flush=True)
        if step % settings.checkpoint_every == 0 or out_of_time:
            save_checkpoint()
        if out_of_time:
            break
    save_checkpoint()
    version = f"{init_version}+notes{step}"
    summary = {"version": version, "init_from": str(init_from), "latents": str(latents_dir),
               "extra": [[str(b), str(l)] for b, l in extra], "label_files": [str(f) for f in label_files],
               "steps": step,
               "wall_seconds": round(elapsed_before + time.monotonic() - started, 1),
               "settings": dataclasses.asdict(settings), "processes": processes.world, "rank": processes.rank,
               "train_stems": len(train_set), "validation_stems": len(data["validation"]), "validation": validation}
    if main:
        train_log.close()
        validation_log.close()
        save_autoencoder(out, model.cpu(), version=version)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    distributed.finish(processes)
    return summary
