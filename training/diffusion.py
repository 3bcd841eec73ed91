"""Training the accompaniment denoiser on latents precomputed with the shipped autoencoder.

Two steps, both resumable and both writing outside the repository:

1. ``training.latents.encode_build``: every (context, target) pair of a data build -> ``<out>/<variant>__<instrument>.npz``
   holding the context and target latents (float16) and ``index.jsonl`` (variant, instrument, split,
   frames). Already encoded pairs are skipped.
2. ``train``: random crops of ``segment_frames`` latent frames; the style embedding is taken from a
   random sub-segment of the same target (Diff-A-Riff); EDM loss with condition dropout; AdamW with
   warm-up, EMA weights, periodic validation, checkpoints, CSV logs and a plot of the curves.

   Optionally a note loss (``note_weight``): the autoencoder's note head reads the denoised bass
   latents, and their cross-entropy against the real bass's notes (the labels ``backline train notes``
   caches) is added, on crops whose context is present and whose noise is below ``note_sigma_max``:
   the EDM loss weighs every latent channel alike, this one the notes the bass plays.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backline.engine.style import latent_statistics
from backline.engine.runtime import DEFAULT_GUIDANCE, latent_space_of
from backline.models.autoencoder import load_autoencoder
from backline.models.conditioning import GRID_CHANNELS, HARMONY_CHANNELS, beat_grid, chord_frames
from backline.models.diffusion import INSTRUMENTS, EDMPrecond, DenoiserConfig, load_denoiser, save_denoiser
from backline.training import distributed
from backline.training.distill import TEACHER_SOLVERS, Teacher, consistency_loss
from backline.training.latents import latent_autoencoder, require_latent_space
from backline.training.notes import read_label_cache
from backline.training.run import RunSettings
from backline.training.seeding import isolated_seed

HARMONY_ESTIMATE_SHARE = 0.5  # share of crops told the context's estimated harmony instead of the true chords
STYLE_FRAMES = (16, 64)  # default length range of the style sub-segment, latent frames (0.75-3 s at 21.5/s)


@dataclass
class LatentPairs:
    """All pairs of one split in memory: lists of (C, frames) float32 arrays and instrument indices, and for a
    conditioned denoiser each pair's beat grid, chords and context harmony per latent frame (None where unknown)."""

    context: list[np.ndarray]
    target: list[np.ndarray]
    instrument: list[int]
    notes: list[np.ndarray | None] = dataclasses.field(default_factory=list)  # per STFT frame, when labelled
    grid: list[np.ndarray | None] = dataclasses.field(default_factory=list)
    chords: list[np.ndarray | None] = dataclasses.field(default_factory=list)
    context_harmony: list[np.ndarray | None] = dataclasses.field(default_factory=list)
    conditioned: bool = False

    @classmethod
    def load(cls, latent_dir: str | Path, split: str, instruments: tuple[str, ...], min_frames: int,
             notes: dict[str, np.ndarray] | None = None, *, frame_rate_hz: float | None = None) -> "LatentPairs":
        """``notes``: frame labels by latent file name (``note_labels``), for the pairs that have them.
        ``frame_rate_hz``: the latent rate, for a conditioned denoiser's beat grid and chords (from each
        entry's ``timing``); left out, none are loaded."""
        latent_dir = Path(latent_dir)
        entries = [json.loads(l) for l in (latent_dir / "index.jsonl").read_text().splitlines() if l.strip()]
        pairs = cls([], [], [], [], conditioned=frame_rate_hz is not None)
        for entry in entries:
            if entry["split"] != split or entry["instrument"] not in instruments or entry["frames"] < min_frames:
                continue
            data = np.load(latent_dir / entry["file"])
            pairs.context.append(data["context"].astype(np.float32))
            pairs.target.append(data["target"].astype(np.float32))
            pairs.instrument.append(INSTRUMENTS.index(entry["instrument"]))
            if pairs.conditioned:
                frames, timing = pairs.target[-1].shape[-1], entry.get("timing")
                pairs.grid.append(None if timing is None else beat_grid(
                    frames, frame_rate_hz, timing["tempo_bpm"], timing["beats_per_bar"]))
                pairs.chords.append(None if timing is None else chord_frames(
                    [tuple(c) for c in timing["chords"]], frames, frame_rate_hz, timing["tempo_bpm"]))
                pairs.context_harmony.append(data["context_harmony"].astype(np.float32)
                                             if "context_harmony" in data.files else None)
            labels = (notes or {}).get(entry["file"])
            if labels is not None and len(labels) % pairs.target[-1].shape[-1]:
                raise ValueError(f"{entry['file']}: {len(labels)} note labels do not divide into its "
                                 f"{pairs.target[-1].shape[-1]} latent frames")
            pairs.notes.append(labels)
        return pairs

    def __len__(self) -> int:
        return len(self.target)

    def _frame_conditions(self, rng: np.random.Generator, picks, starts, frames: int,
                          estimate_share: float = HARMONY_ESTIMATE_SHARE) -> dict[str, torch.Tensor]:
        """The crops' beat grids and harmonies with their masks (0: unknown). The harmony is the true chords,
        or for ``estimate_share`` of the rows (and wherever the chords are unknown) the context's own harmony
        as the engine reads it when no chords are given."""
        grid = np.zeros((len(picks), GRID_CHANNELS, frames), np.float32)
        harmony = np.zeros((len(picks), HARMONY_CHANNELS, frames), np.float32)
        grid_mask, harmony_mask = np.zeros(len(picks), np.float32), np.zeros(len(picks), np.float32)
        estimate = rng.random(len(picks)) < estimate_share
        for row, (i, start) in enumerate(zip(picks, starts)):
            if self.grid[i] is not None:
                grid[row], grid_mask[row] = self.grid[i][:, start:start + frames], 1.0
            source = self.chords[i]
            if self.context_harmony[i] is not None and (estimate[row] or source is None):
                source = self.context_harmony[i]
            if source is not None:
                harmony[row], harmony_mask[row] = source[:, start:start + frames], 1.0
        return {"grid": torch.from_numpy(grid), "grid_mask": torch.from_numpy(grid_mask),
                "harmony": torch.from_numpy(harmony), "harmony_mask": torch.from_numpy(harmony_mask)}

    def batch(self, rng: np.random.Generator, batch_size: int, frames: int, embed=latent_statistics,
              style_frames: tuple[int, int] = STYLE_FRAMES) -> dict[str, torch.Tensor]:
        """Random crops; each style embedding (``embed``: latents -> embedding) comes from a random
        sub-segment of the same target, ``style_frames`` (shortest, longest) latent frames long."""
        picks = rng.integers(0, len(self), batch_size)
        context, target, style, starts = [], [], [], []
        for i in picks:
            total = self.target[i].shape[-1]
            start = int(rng.integers(0, total - frames + 1))
            starts.append(start)
            context.append(self.context[i][:, start : start + frames])
            target.append(self.target[i][:, start : start + frames])
            length = int(rng.integers(min(style_frames[0], total), min(total, style_frames[1]) + 1))
            style_start = int(rng.integers(0, total - length + 1))
            style.append(embed(self.target[i][:, style_start : style_start + length]))
        batch = {
            "context": torch.from_numpy(np.stack(context)),
            "target": torch.from_numpy(np.stack(target)),
            "style": torch.from_numpy(np.stack(style)),
            "instrument": torch.tensor([self.instrument[i] for i in picks], dtype=torch.long),
        }
        if self.conditioned:
            batch |= self._frame_conditions(rng, picks, starts, frames)
        if any(labels is not None for labels in self.notes):  # -1: no labels (drums, unlabelled bass)
            per_latent = next(len(l) // t.shape[-1] for l, t in zip(self.notes, self.target) if l is not None)
            notes = np.full((batch_size, frames * per_latent), -1, np.int64)
            for row, (i, start) in enumerate(zip(picks, starts)):
                if self.notes[i] is not None:
                    notes[row] = self.notes[i][start * per_latent:(start + frames) * per_latent]
            batch["notes"] = torch.from_numpy(notes)
        return batch


def read_note_labels(paths) -> dict[str, np.ndarray]:
    """Frame labels by latent file name, from `backline train labels` files or the `labels*.npz` caches of `backline
    train notes` runs."""
    return {entry["file"]: entry["labels"] for path in paths for entry in read_label_cache(path)[1].values()}


def note_loss(note_logits, denoised: torch.Tensor, notes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the note head's reading of ``denoised`` against ``notes`` (-1: none), on the rows
    ``keep`` marks; ``note_logits``: scaled latents -> logits (batch, classes, STFT frames)."""
    targets = torch.where(keep[:, None], notes, torch.full_like(notes, -1))
    if not bool((targets >= 0).any()):
        return denoised.sum() * 0.0
    return torch.nn.functional.cross_entropy(note_logits(denoised), targets, ignore_index=-1)


@dataclass(frozen=True)
class TrainOptions(RunSettings):
    """A denoiser run: the shared run settings (training/run.py) and the denoiser's own."""

    steps: int = 20_000
    batch_size: int = 16
    learning_rate: float = 5e-4
    ema_decay: float = 0.999
    instruments: tuple[str, ...] = INSTRUMENTS
    style_file: str | None = None  # a style file whose audio tower gives the style embeddings (else latent statistics)
    init_from: str | None = None  # a denoiser file to start from (a fresh run only)
    style_frames: tuple[int, int] = STYLE_FRAMES  # style sub-segment length range, latent frames
    note_weight: float = 0.0  # > 0: the note loss (module docstring), with the next three
    note_autoencoder: str | None = None  # the autoencoder file with the note head (latents of its space)
    note_labels: tuple[str, ...] = ()  # labels*.npz caches of `backline train notes` runs on these latents
    note_sigma_max: float = 1.0
    distill_from: str | None = None  # a teacher denoiser file: consistency distillation (training/distill.py)
    distill_target: str = "student"  # whose estimate the student is pulled towards: "student" (itself) or "ema"
    grid_points: int = 40  # distillation: noise levels of the teacher's steps
    teacher_solver: str = "heun"  # distillation: the teacher's step, heun or euler


def _note_reader(options: TrainOptions, latent_dir, device: torch.device = torch.device("cpu")) -> tuple:
    """The frozen note head as scaled latents -> logits, and the labels by latent file (the note loss)."""
    if not options.note_autoencoder or not options.note_labels:
        raise ValueError("the note loss needs note_autoencoder (with a note head) and note_labels")
    autoencoder, metadata = load_autoencoder(options.note_autoencoder)
    if autoencoder.config.note_count <= 0:
        raise ValueError(f"{options.note_autoencoder}: the note loss needs a note head (its config has none)")
    require_latent_space(latent_dir, latent_space_of(autoencoder.config.latent_space, metadata.get("backline_version")),
                         options.note_autoencoder)
    autoencoder.requires_grad_(False)
    autoencoder.to(device)
    scale = autoencoder.config.latent_scale
    return (lambda latents: autoencoder.decode_notes(latents / scale)), read_note_labels(options.note_labels)


def _plot(run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for name in ("train", "validation"):
        path = run_dir / f"{name}.csv"
        if path.is_file():
            rows = list(csv.DictReader(path.open()))
            if rows:
                axis.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], label=name)
    axis.set_xlabel("step")
    axis.set_ylabel("EDM loss")
    axis.set_yscale("log")
    if axis.lines:
        axis.legend()
    figure.tight_layout()
    figure.savefig(run_dir / "curves.png", dpi=80)
    plt.close(figure)


GROWABLE = ("name", "style_space", "style_dim", "grid_channels", "harmony_channels", "drop_grid", "drop_harmony")


def initial_weights(start_from: EDMPrecond, config: DenoiserConfig, what: str) -> dict[str, torch.Tensor]:
    """``start_from``'s weights for a model of ``config``, which may differ from its own in the style space (the style
    projection then starts afresh) and in the beat grid and harmony it is told: the stem's new input channels start
    at zero, so the model starts out as ``start_from`` itself and learns what the new conditions add."""
    mine = {field: getattr(config, field) for field in GROWABLE}
    if dataclasses.replace(start_from.config, **mine) != config:
        raise ValueError(f"{what}: its config differs from this run's beyond the style space and the conditions")
    own = EDMPrecond(config).state_dict()
    weights = {k: v for k, v in start_from.state_dict().items() if own[k].shape == v.shape}
    weights = {**own, **weights}
    stem, theirs = "net.stem.weight", start_from.state_dict()["net.stem.weight"]
    if own[stem].shape != theirs.shape:  # (out, inputs, kernel): the inputs it had first, the new ones after
        weights[stem] = torch.zeros_like(own[stem])
        weights[stem][:, :theirs.shape[1]] = theirs
    return weights


@torch.no_grad()
def validation_loss(model: EDMPrecond, pairs: LatentPairs, frames: int, *, batches: int = 8, seed: int = 1234,
                    embed=latent_statistics, style_frames: tuple[int, int] = STYLE_FRAMES) -> float:
    """Mean EDM loss on fixed crops, noise and dropout (the same every call, so curves compare)."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    losses = []
    for _ in range(batches):
        batch = pairs.batch(rng, 16, frames, embed, style_frames)
        batch.pop("notes", None)
        draws = model.loss_draws(tuple(batch["target"].shape), generator)
        losses.append(model.loss(**{k: v.to(device) for k, v in batch.items()},
                                 draws={k: v.to(device) for k, v in draws.items()}).item())
    return float(np.mean(losses))


@isolated_seed(lambda arguments: arguments["options"].seed)
def train(config: DenoiserConfig, latent_dir: str | Path, run_dir: str | Path, options: TrainOptions, *,
          resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) a denoiser; returns a summary dict. The run folder holds checkpoint.pt.

    Under ``torchrun`` every process takes its rows of each global batch of ``options.batch_size``
    (training/distributed.py); rank 0 writes the logs and checkpoints."""
    processes = distributed.start()
    run_dir = Path(run_dir)
    if processes.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    frames = config.segment_frames
    note_logits, notes = None, None
    if options.note_weight > 0:
        note_logits, notes = _note_reader(options, latent_dir, processes.device)
    rate = config.latent_rate_hz if config.frame_inputs else None  # a conditioned denoiser's grid and chords
    train_pairs = LatentPairs.load(latent_dir, "train", options.instruments, frames, notes, frame_rate_hz=rate)
    validation_pairs = LatentPairs.load(latent_dir, "validation", options.instruments, frames, frame_rate_hz=rate)
    if not len(train_pairs):
        raise ValueError(f"{latent_dir}: no training pairs with at least {frames} latent frames")
    if not len(validation_pairs):
        validation_pairs = train_pairs
    embed = latent_statistics
    if options.style_file:
        from backline.engine.style import PromptPrior

        style = PromptPrior.load(options.style_file)
        config = dataclasses.replace(config, style_space=style.audio_space, style_dim=style.style_dim)
        embed = style.audio_embedding
    first = train_pairs.target[0]
    style_dim = len(embed(first[:, :options.style_frames[0]]))
    if first.shape[0] != config.latent_channels or style_dim != config.style_dim:
        raise ValueError(f"latents have {first.shape[0]} channels and make {style_dim}-number style embeddings; config "
                         f"expects latent_channels={config.latent_channels} and style_dim={config.style_dim}")
    rows = processes.rows(options.batch_size)

    model = EDMPrecond(config)
    teacher = None
    if options.distill_from:  # the student has the teacher's config and starts from its weights
        teacher = Teacher.load(options.distill_from, processes.device)
        if teacher.model.config.to_dict() != config.to_dict():
            raise ValueError(f"{options.distill_from}: a student has its teacher's config; this run's is {config.name}")
        if options.teacher_solver not in TEACHER_SOLVERS:
            raise ValueError(f"teacher_solver is one of {', '.join(TEACHER_SOLVERS)}, not {options.teacher_solver!r}")
    init_from = options.init_from or options.distill_from
    if init_from and not (resume and (run_dir / "checkpoint.pt").is_file()):
        start_from, _ = load_denoiser(init_from)
        model.load_state_dict(initial_weights(start_from, config, init_from))
    ema = EDMPrecond(config)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.learning_rate,
                                  weight_decay=0.01)
    step = 0
    checkpoint_path = run_dir / "checkpoint.pt"
    if resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, weights_only=True, map_location="cpu")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimiser"])
        step = int(state["step"])
    if teacher is None:
        objective = lambda m, batch, draws, details: m.loss(**batch, draws=draws, details=details)
    else:
        target_network = ema if options.distill_target == "ema" else None
        objective = lambda m, batch, draws, details: consistency_loss(
            m, teacher, batch, draws, grid_points=options.grid_points, solver=options.teacher_solver,
            target_network=target_network)
    loss_module = processes.wrap(distributed.LossModule(model, objective))
    ema.to(processes.device)
    if processes.main:
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
        distributed.record_run(run_dir, options, processes, step)
    rng = np.random.default_rng([options.seed, step])
    generator = torch.Generator().manual_seed(options.seed * 1_000_003 + step)

    def save_checkpoint() -> None:
        distributed.save_checkpoint(processes, {"model": model.state_dict(), "ema": ema.state_dict(),
                                                "optimiser": optimiser.state_dict(), "step": torch.tensor(step)},
                                    checkpoint_path)

    main = processes.main
    train_log = (run_dir / "train.csv").open("a", newline="") if main else None
    validation_log = (run_dir / "validation.csv").open("a", newline="") if main else None
    if main and train_log.tell() == 0:
        train_log.write("step,elapsed_seconds,learning_rate,loss\n")
    if main and validation_log.tell() == 0:
        validation_log.write("step,loss,ema_loss\n")
    bar = None
    if progress and main:
        from tqdm import tqdm

        bar = tqdm(total=options.steps, initial=step, desc="diffusion", dynamic_ncols=True)
    start = time.perf_counter()
    running = []
    try:
        while step < options.steps:
            if processes.any(bool(options.time_limit_minutes)
                             and time.perf_counter() - start > 60 * options.time_limit_minutes):
                break
            learning_rate = options.learning_rate * min(1.0, (step + 1) / options.warmup_steps)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate
            batch = train_pairs.batch(rng, options.batch_size, frames, embed, options.style_frames)
            draws = model.loss_draws(tuple(batch["target"].shape), generator)  # the global batch's, then our rows
            batch = {k: v[rows].to(processes.device) for k, v in batch.items()}
            draws = {k: v[rows].to(processes.device) for k, v in draws.items()}
            labels = batch.pop("notes", None)
            with processes.autocast():
                if note_logits is not None and labels is not None:
                    loss, denoised, sigma, context_mask = loss_module(batch, draws, True)
                    keep = (sigma < options.note_sigma_max) & (context_mask > 0)
                    loss = loss + options.note_weight * note_loss(note_logits, denoised, labels, keep)
                else:
                    loss = loss_module(batch, draws, False)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            with torch.no_grad():
                decay = min(options.ema_decay, (1 + step) / (10 + step))
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - decay)
            step += 1
            running.append(processes.mean(loss.item()))  # the global batch's loss
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}")
            if main and step % 10 == 0:
                train_log.write(f"{step},{time.perf_counter() - start:.1f},{learning_rate:.3g},{np.mean(running[-10:]):.5f}\n")
                train_log.flush()
            if main and (step % options.validate_every == 0 or step == options.steps):
                model.eval()
                losses = [validation_loss(m, validation_pairs, frames, embed=embed, style_frames=options.style_frames)
                          for m in (model, ema)]
                validation_log.write(f"{step},{losses[0]:.5f},{losses[1]:.5f}\n")
                validation_log.flush()
                model.train()
                _plot(run_dir)
            if step % options.checkpoint_every == 0:
                save_checkpoint()
    finally:
        save_checkpoint()
        if main:
            train_log.close()
            validation_log.close()
            if bar:
                bar.close()
            _plot(run_dir)
        distributed.finish(processes)
    return {"step": step, "wall_seconds": round(time.perf_counter() - start, 1), "train_pairs": len(train_pairs),
            "validation_pairs": len(validation_pairs), "processes": processes.world, "rank": processes.rank}


def _guidance_record(guidance: dict) -> dict:
    """``{"cfg_context": c, ..., "instruments": {name: {...}}}`` (DEFAULT_GUIDANCE's names) with floats, empty parts
    left out."""
    record = {k: float(v) for k, v in guidance.items() if k in DEFAULT_GUIDANCE}
    instruments = {name: {k: float(v) for k, v in scales.items()} for name, scales in
                   (guidance.get("instruments") or {}).items() if scales}
    return record | ({"instruments": instruments} if instruments else {})


def set_guidance(path: str | Path, guidance: dict, sampling: dict | None = None,
                 distilled_from: str | None = None) -> Path:
    """Record new default guidance scales (and steps and sampler) in an existing denoiser file (same weights, same
    version).

    The defaults are measured after training (see the model card), so they can change without
    retraining; ``guidance`` is merged into what the file records, per instrument too; ``sampling``
    (``{"steps": n, "sampler": name, "candidates": k, "few_step_for": [...]}``, any) into its sampling record;
    ``distilled_from``: the version of the denoiser it was distilled from.
    """
    from backline.models.contract import load_model, save_model
    from backline.models.diffusion import KIND

    state_dict, metadata = load_model(path, kind=KIND)
    config = dict(metadata["config"])
    provenance = dict(config.get("provenance") or {})
    recorded = dict(provenance.get("guidance") or {})
    instruments = {name: dict(scales) for name, scales in (recorded.get("instruments") or {}).items()}
    for name, scales in (guidance.get("instruments") or {}).items():
        instruments.setdefault(name, {}).update(scales)
    recorded.update({k: v for k, v in guidance.items() if k != "instruments"})
    provenance["guidance"] = _guidance_record(recorded | {"instruments": instruments})
    if sampling:
        provenance["sampling"] = dict(provenance.get("sampling") or {}) | sampling
    if distilled_from is not None:
        provenance["distilled_from"] = distilled_from
    config["provenance"] = provenance
    return save_model(path, state_dict, config, kind=KIND, version=metadata["backline_version"], dtype=None)


def ship(run_dir: str | Path, to: str | Path, *, version: str, latent_dir: str | Path | None = None,
         guidance: dict | None = None, sampling: dict | None = None, distilled_from: str | None = None) -> Path:
    """Write the run's EMA weights as an fp16 model file, recording the autoencoder it was trained on, the
    guidance scales, steps and sampler the engine uses by default with it (measured, see the model card), and for
    a distillation run the version of its teacher (``distilled_from``, else the run's own ``--distill-from``)."""
    run_dir = Path(run_dir)
    config = DenoiserConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    model = EDMPrecond(config)
    model.load_state_dict(state["ema"])
    extra = {"steps": int(state["step"])}
    teacher = json.loads((run_dir / "training.json").read_text())["settings"].get("distill_from") if (
        run_dir / "training.json").is_file() else None
    if distilled_from is None and teacher:  # the engine pairs a student only with the denoiser it was distilled from
        distilled_from = load_denoiser(teacher)[1].get("backline_version")
    if distilled_from is not None:
        extra["distilled_from"] = distilled_from
    if guidance:
        extra["guidance"] = _guidance_record(guidance)
    if sampling:
        extra["sampling"] = dict(sampling)
    if latent_dir is not None and (recorded := latent_autoencoder(latent_dir)) is not None:
        extra["autoencoder"] = recorded
    return save_denoiser(to, model, version=version, extra=extra)
