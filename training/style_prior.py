"""Training and measuring the style encoder (``engine/style.py``): the audio tower and the prompt prior.

Data: the target stems of a latent directory (``backline train latents``). Each stem gives segments
of 2-8 s; its text is drawn from descriptions of its GM program or drum kit, which the data engine
recorded (``programs`` in the manifest), e.g. "slap bass", "brushed jazz drum kit", and of the
effects its variant was rendered with (reverb, chorus).

**Audio tower** (``audio_space="tower"``; the default is ``"statistics"``, the fixed latent statistics the
shipped denoiser is conditioned on): trained first, CLAP-style. A batch holds
two segments of each of 64 different stems and one description of each; the loss is a symmetric
InfoNCE between the segments' embeddings and the descriptions' (the frozen text tower followed by a
learned projection; stems of the same family are not each other's negatives) plus half a symmetric
InfoNCE between the two segments of each stem (a segment must find its own stem). Temperature 0.1.
Only the tower is saved; the projection was there to shape the space.

**Prompt prior** (the modality-gap mapper), trained after the tower in its space:

mean squared error to the standardised audio embedding plus a symmetric InfoNCE term between
the mapped prompts and the audio embeddings of a batch (temperature 0.1), so prompts land both near
their own sound and away from others. The text tower stays frozen; only the prior (an MLP) learns.

A run directory (``--run-dir``) keeps a checkpoint of each phase, so a stopped run resumes; under ``torchrun``
every process embeds its rows of each batch and the contrastive terms gather the whole batch's embeddings.

Measures (held-out split): prompt-to-family retrieval (for each held-out segment, rank the family
prompts by similarity: recall@1, @5 and chance), and audio-to-audio retrieval (a segment finds another
segment of the same stem among one segment of every held-out stem).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backline.data.dataset import read_manifest, stem_program
from backline.engine.style import (PRIOR_KIND, TEXT_MODEL, PromptPrior, TextTower,
                                   hybrid_embedding, latent_statistics, prior_forward, tower_forward)
from backline.models.style import AudioTower, Prior, tower_from_weights
from backline.models.style_space import STATISTICS_SPACE
from backline.training import distributed
from backline.training.latents import latent_autoencoder
from backline.training.seeding import isolated_seed

# Families named by the GM programs the data engine draws (bass 32-39, drum kits).
BASS_FAMILIES = {
    32: ("upright bass", ["acoustic upright bass", "double bass", "upright bass, jazz", "woody acoustic bass"]),
    33: ("fingered electric bass", ["electric bass played with fingers", "finger bass", "fingerstyle electric bass", "warm electric bass"]),
    34: ("picked electric bass", ["electric bass played with a pick", "pick bass", "bright picked bass guitar", "punchy plectrum bass"]),
    35: ("fretless bass", ["fretless electric bass", "smooth fretless bass", "singing fretless bass guitar", "jaco style fretless"]),
    36: ("slap bass", ["slap bass, funky", "slapped electric bass", "funk slap bass", "popping and slapping bass"]),
    37: ("slap bass", ["slap bass, funky", "slapped electric bass", "funk slap bass", "popping and slapping bass"]),
    38: ("synth bass", ["synthesizer bass", "analog synth bass", "electronic bass synth", "fat synth bass"]),
    39: ("synth bass", ["synthesizer bass", "analog synth bass", "electronic bass synth", "fat synth bass"]),
}
DRUM_FAMILIES = {
    0: ("standard drum kit", ["standard acoustic drum kit", "pop rock drums", "acoustic drums", "a normal drum kit"]),
    8: ("room drum kit", ["roomy acoustic drums", "drums in a live room", "ambient room kit", "big room drums"]),
    16: ("power drum kit", ["powerful rock drums", "heavy power kit", "loud rock drum kit", "arena rock drums"]),
    24: ("electronic drum kit", ["electronic drums", "synth drum kit", "drum machine, electronic", "electro drums"]),
    25: ("TR-808 drum machine", ["808 drum machine", "Roland TR-808 beat", "hip hop 808 drums", "analog drum machine"]),
    32: ("jazz drum kit", ["jazz drums", "light jazz kit", "swing drum kit", "jazz combo drums"]),
    40: ("brushed jazz drum kit", ["brush drums", "drums played with brushes", "soft brushed snare", "jazz brushes"]),
    48: ("orchestral percussion", ["orchestra percussion", "timpani and concert percussion", "symphonic percussion", "concert bass drum and cymbals"]),
}


def family(instrument: str, record: dict) -> tuple[str, list[str]] | None:
    """The GM family (name, prompts) of the record's ``instrument`` stem, or None when its program names none."""
    program = stem_program(record, instrument)
    return (BASS_FAMILIES if instrument == "bass" else DRUM_FAMILIES).get(program) if program is not None else None


@dataclass(frozen=True)
class Stem:
    latents: np.ndarray  # (channels, frames) float32
    instrument: str
    family: str
    texts: tuple[str, ...]
    split: str
    stem_id: str


def load_stems(latent_dir: Path, data_dir: Path) -> list[Stem]:
    """Target stems of the latent directory whose program names a family."""
    manifest = {record["variant_id"]: record for record in read_manifest(data_dir)}
    stems = []
    for line in (latent_dir / "index.jsonl").read_text().splitlines():
        entry = json.loads(line)
        record = manifest.get(entry["variant_id"])
        named = family(entry["instrument"], record) if record else None
        if named is None:
            continue
        name, texts = named
        target = np.load(latent_dir / entry["file"])["target"].astype(np.float32)
        stems.append(Stem(target, entry["instrument"], name, (name, *texts, *effect_texts(name, record.get("effects", {}))),
                          entry["split"], f"{entry['variant_id']}__{entry['instrument']}"))
    return stems


def effect_texts(name: str, effects: dict) -> tuple[str, ...]:
    """Descriptions of a family with the effects its variant was rendered with."""
    texts = [f"{name} with reverb", f"{name}, wet and roomy"] if effects.get("reverb") else [f"dry {name}", f"{name}, close and dry"]
    if effects.get("chorus"):
        texts.append(f"{name} with chorus")
    return tuple(texts)


def segments(stem: Stem, count: int, rng: np.random.Generator, rate_hz: float, embed=latent_statistics) -> np.ndarray:
    """(count, style_dim) embeddings (``embed``: latent statistics, or a tower) of random 2-8 s segments."""
    frames = stem.latents.shape[1]
    out = []
    for _ in range(count):
        length = min(frames, int(rng.uniform(2.0, 8.0) * rate_hz))
        start = int(rng.integers(0, frames - length + 1))
        out.append(embed(stem.latents[:, start:start + length]))
    return np.stack(out)


AUDIO_SPACES = ("statistics", "tower", "tower+statistics")


def load_tower(path: Path) -> AudioTower:
    """The audio tower of a style file."""
    weights = PromptPrior.load(path).weights
    if not any(k.startswith("tower.") for k in weights):
        raise ValueError(f"{path}: no audio tower in this style file")
    return tower_from_weights(weights)


def _crops(stems: list[Stem], picks: np.ndarray, length: int, rng: np.random.Generator) -> torch.Tensor:
    out = []
    for i in picks:
        start = int(rng.integers(0, stems[i].latents.shape[1] - length + 1))
        out.append(stems[i].latents[:, start:start + length])
    return torch.from_numpy(np.stack(out))


def _same_family(stems: list[Stem], picks: np.ndarray) -> torch.Tensor:
    """(batch, batch) bool: the picked stems that share a family (not each other's negatives)."""
    return torch.from_numpy(np.array([[stems[i].family == stems[j].family for j in picks] for i in picks]))


def _optimise(optimiser, schedule, loss: torch.Tensor) -> None:
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    schedule.step()


def _info_nce(logits: torch.Tensor, not_negative: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over a square logit matrix whose diagonal holds the positives."""
    if not_negative is not None:
        logits = logits.masked_fill(not_negative & ~torch.eye(len(logits), dtype=torch.bool), -1e4)
    labels = torch.arange(len(logits))
    return 0.5 * (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels))


def _tower_loss(modules: nn.ModuleDict, first, second, text, not_negative, temperature: float, gather):
    """The tower's loss on this process's rows, its embeddings gathered from every process so each InfoNCE sees
    the whole batch (``gather``: ``Processes.gather``, identity in one process)."""
    audio = gather(nn.functional.normalize(modules["tower"](first), dim=1))
    other = gather(nn.functional.normalize(modules["tower"](second), dim=1))
    text = gather(nn.functional.normalize(modules["projection"](text), dim=1))
    nce_text = _info_nce(audio @ text.T / temperature, not_negative)
    nce_audio = _info_nce(audio @ other.T / temperature)
    return nce_text + 0.5 * nce_audio, nce_text.detach(), nce_audio.detach()


def train_tower(stems: list[Stem], text_vectors: dict[str, np.ndarray], rng: np.random.Generator, rate_hz: float, *,
                steps: int, batch_size: int = 64, learning_rate: float = 2e-3, dim: int = 64,
                temperature: float = 0.1, log=print, run: "_Run | None" = None) -> AudioTower:
    """The audio tower, trained contrastively against descriptions and against the same stem (see above).
    ``run``: the processes and the checkpoint (``_Run``); each process embeds its rows of every batch."""
    run = run or _Run()
    tower = AudioTower(stems[0].latents.shape[0], dim)
    text_dim = len(next(iter(text_vectors.values())))
    projection = nn.Sequential(nn.Linear(text_dim, 256), nn.GELU(approximate="tanh"), nn.Linear(256, dim))
    modules = nn.ModuleDict({"tower": tower, "projection": projection})
    optimiser = torch.optim.AdamW(modules.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    shortest = min(s.latents.shape[1] for s in stems)
    batch_size = min(batch_size, len(stems))
    rows = run.processes.rows(batch_size)
    first_step = run.restore("tower", modules, optimiser, schedule, rng)
    loss_module = run.processes.wrap(distributed.LossModule(
        modules, lambda m, *a: _tower_loss(m, *a, temperature, run.processes.gather)))
    for step in range(first_step, steps):
        picks = rng.choice(len(stems), batch_size, replace=False)
        first, second = (_crops(stems, picks, min(shortest, int(rng.uniform(2.0, 8.0) * rate_hz)), rng) for _ in range(2))
        text = torch.from_numpy(np.stack([text_vectors[stems[i].texts[rng.integers(len(stems[i].texts))]] for i in picks]))
        loss, nce_text, nce_audio = loss_module(first[rows], second[rows], text[rows], _same_family(stems, picks))
        _optimise(optimiser, schedule, loss)
        run.saved("tower", step + 1, steps, modules, optimiser, schedule, rng)
        if run.processes.main and (step % 500 == 0 or step == steps - 1):
            log(f"tower step {step}: text nce {nce_text.item():.4f} audio nce {nce_audio.item():.4f}")
    return tower.eval()


class _Run:
    """Where a style run is: its processes (training/distributed.py) and, with a run directory, a checkpoint every
    ``checkpoint_every`` steps of each phase (``tower``, then ``prior``) written by rank 0, so a run resumes, under
    any number of processes, where it stopped."""

    def __init__(self, run_dir: Path | None = None, checkpoint_every: int = 500, processes=None):
        self.processes = processes or distributed.Processes(0, 1, torch.device("cpu"))
        self.path = Path(run_dir) / "checkpoint.pt" if run_dir else None
        self.every = checkpoint_every
        self.state = torch.load(self.path, weights_only=True) if self.path and self.path.is_file() else None
        self.extra: dict = {}  # what the prior phase needs to rebuild its bank: the generator's state before it

    @property
    def phase(self) -> str | None:
        return self.state["phase"] if self.state else None

    def restore(self, phase: str, modules: nn.Module, optimiser, schedule, rng: np.random.Generator) -> int:
        """The step ``phase`` resumes from (0 when it starts afresh), with the modules and the generator restored."""
        if self.phase != phase:
            return 0
        modules.load_state_dict(self.state["modules"])
        optimiser.load_state_dict(self.state["optimiser"])
        schedule.load_state_dict(json.loads(self.state["schedule"]))
        rng.bit_generator.state = json.loads(self.state["rng"])
        return int(self.state["step"])

    def saved(self, phase: str, step: int, steps: int, modules: nn.Module, optimiser, schedule,
              rng: np.random.Generator) -> None:
        if self.path is None or not self.processes.main or (step % self.every and step != steps):
            return
        state = {"phase": phase, "step": step, "modules": modules.state_dict(), "optimiser": optimiser.state_dict(),
                 "schedule": json.dumps(schedule.state_dict()), "rng": json.dumps(rng.bit_generator.state),
                 **self.extra}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        distributed.save_checkpoint(self.processes, state, self.path)


def _similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of standardised embeddings, (n, d) x (m, d) -> (n, m)."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-8)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-8)
    return a @ b.T


def recall_at(similarity: np.ndarray, correct: np.ndarray, k: int) -> float:
    """Share of rows whose correct column ranks within the top k."""
    rank = (similarity > similarity[np.arange(len(correct)), correct][:, None]).sum(axis=1)
    return float(np.mean(rank < k))


def evaluate(weights: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray, stems: list[Stem], tower: TextTower,
             rate_hz: float, seed: int = 1, embed=latent_statistics) -> dict:
    """Prompt-to-family and audio-to-audio retrieval on ``stems`` (the held-out split), audio embedded by ``embed``."""
    rng = np.random.default_rng(seed)
    report: dict = {}
    for instrument in ("bass", "drums"):
        group = [s for s in stems if s.instrument == instrument]
        if len(group) < 2:
            continue
        families = sorted({s.family for s in group} | {name for name, _ in
                           (BASS_FAMILIES if instrument == "bass" else DRUM_FAMILIES).values()})
        prompts = (prior_forward(weights, tower.embed(families)))  # standardised space
        audio = [(segments(s, 4, rng, rate_hz, embed) - mean) / std for s in group]
        queries = np.concatenate(audio)
        truth = np.concatenate([[families.index(s.family)] * 4 for s in group])
        sim = _similarity(queries, prompts)
        a_first, a_second = np.stack([a[0] for a in audio]), np.stack([a[1] for a in audio])
        sim_audio = _similarity(a_first, a_second)
        report[instrument] = {
            "stems": len(group), "families": len(families), "family_names": families,
            "prompt_recall_at_1": recall_at(sim, truth, 1), "prompt_recall_at_5": recall_at(sim, truth, 5),
            "prompt_chance_at_1": 1 / len(families), "prompt_chance_at_5": min(1.0, 5 / len(families)),
            "audio_recall_at_1": recall_at(sim_audio, np.arange(len(group)), 1),
            "audio_recall_at_5": recall_at(sim_audio, np.arange(len(group)), 5),
            "audio_chance_at_1": 1 / len(group), "audio_chance_at_5": min(1.0, 5 / len(group)),
        }
    return report


@isolated_seed(lambda arguments: arguments["seed"])
def train(latent_dir: Path, data_dir: Path, out: Path, *, steps: int = 3000, batch_size: int = 256,
          learning_rate: float = 2e-3, seed: int = 0, rate_hz: float | None = None, audio_space: str = "statistics",
          tower_steps: int = 2000, tower_dim: int = 64, tower_from: Path | None = None, run_dir: Path | None = None,
          checkpoint_every: int = 500, log=print) -> dict:
    """Train the audio tower (``audio_space="tower"``) then the prior; writes ``out`` (.safetensors with the
    tower, the prior, the config and the standardisation) and returns the report.

    ``run_dir``: a checkpoint every ``checkpoint_every`` steps of each phase; a run started again with the same
    directory resumes there. Under ``torchrun`` each process embeds its rows of every batch (of ``batch_size`` in
    all) and the contrastive terms see the whole batch (training/distributed.py); rank 0 checkpoints, measures and
    writes."""
    if audio_space not in AUDIO_SPACES:
        raise ValueError(f"audio_space must be one of {', '.join(AUDIO_SPACES)}, got {audio_space!r}")
    started = time.perf_counter()
    processes = distributed.start()
    run = _Run(run_dir, checkpoint_every, processes)
    rng = np.random.default_rng(seed)
    rate_hz = rate_hz or _latent_rate(latent_dir)
    stems = load_stems(latent_dir, data_dir)
    train_stems = [s for s in stems if s.split == "train"]
    held_out = [s for s in stems if s.split == "test"]
    if not train_stems:
        raise ValueError(f"{latent_dir}: no training stems with a named program")
    tower = TextTower()
    texts = sorted({t for s in train_stems for t in s.texts})
    text_vectors = dict(zip(texts, tower.embed(texts)))
    audio_tower, embed = None, latent_statistics
    if audio_space != "statistics":
        if tower_from is not None:  # the tower of an earlier style file, kept as it is
            audio_tower = load_tower(tower_from)
            tower_steps = 0
        elif run.phase == "prior":  # trained before the run stopped
            audio_tower = AudioTower(train_stems[0].latents.shape[0], tower_dim)
            audio_tower.load_state_dict(run.state["tower"])
            audio_tower.eval()
        else:
            audio_tower = train_tower(train_stems, text_vectors, rng, rate_hz, steps=tower_steps, dim=tower_dim, log=log,
                                      run=run)
        run.extra["tower"] = audio_tower.state_dict()
        tower_weights = {f"tower.{k}": v.detach().half().float().numpy() for k, v in audio_tower.state_dict().items()}

        def embed(latents):  # as the engine will: NumPy, from the fp16 weights that ship
            return (hybrid_embedding if audio_space == "tower+statistics" else tower_forward)(tower_weights, latents)
    if run.phase == "prior":
        rng.bit_generator.state = json.loads(run.state["rng_before_bank"])
    run.extra["rng_before_bank"] = json.dumps(rng.bit_generator.state)
    bank = np.stack([segments(s, 32, rng, rate_hz, embed) for s in train_stems])  # 32 segments per stem, embedded once
    pool = bank.reshape(-1, bank.shape[-1])
    mean, std = pool.mean(axis=0), pool.std(axis=0) + 1e-4
    model = Prior(len(next(iter(text_vectors.values()))), pool.shape[1])
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    rows = processes.rows(batch_size)
    first_step = run.restore("prior", model, optimiser, schedule, rng)
    loss_module = processes.wrap(distributed.LossModule(model, lambda m, *a: _prior_loss(m, *a, processes)))
    for step in range(first_step, steps):
        picks = rng.integers(0, len(train_stems), batch_size)
        text = torch.from_numpy(np.stack([text_vectors[train_stems[i].texts[rng.integers(len(train_stems[i].texts))]]
                                          for i in picks]))
        target = torch.from_numpy((bank[picks, rng.integers(0, bank.shape[1], batch_size)] - mean) / std)
        loss, mse, nce = loss_module(text[rows], target[rows], _same_family(train_stems, picks))
        _optimise(optimiser, schedule, loss)
        run.saved("prior", step + 1, steps, model, optimiser, schedule, rng)
        if step % 500 == 0 or step == steps - 1:
            mse_all = processes.mean(mse.item())  # the whole batch's (every process joins)
            if processes.main:
                log(f"step {step}: mse {mse_all:.4f} nce {nce.item():.4f}")
    summary = {"train_stems": len(train_stems), "held_out_stems": len(held_out), "steps": steps,
               "tower_steps": tower_steps if audio_tower is not None else 0, "processes": processes.world,
               "rank": processes.rank, "global_batch": batch_size}
    if processes.main:
        config = {"text_model": TEXT_MODEL, "text_dim": int(model.layers[0].in_features), "hidden": 256,
                  "style_dim": int(pool.shape[1]),
                  "audio_tower": {"kind": "frames x3 -> 192 -> 192, mean+std pool -> 192 -> 64, norm sqrt(64)",
                                  "steps": tower_steps, "from": str(tower_from) if tower_from else None}
                  if audio_tower is not None else None,
                  "audio_space_kind": audio_space,
                  "style_mean": mean.tolist(), "style_std": std.tolist(), "latent_rate_hz": rate_hz,
                  "autoencoder": latent_autoencoder(latent_dir),  # whose latents these are: the engine checks it
                  "training": {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
                               "stems": len(train_stems), "processes": processes.world}}
        version = f"0.2.0+{tower_steps}+{steps}steps" if audio_tower is not None else f"0.1.1+{steps}steps"
        save_prior(out, model, config, version=version, audio_tower=audio_tower)
        shipped = PromptPrior.load(out)  # measured as shipped: fp16 weights
        summary |= {"audio_space": shipped.audio_space, "wall_seconds": round(time.perf_counter() - started, 1),
                    "held_out": evaluate(shipped.weights, mean, std, held_out, tower, rate_hz,
                                         embed=shipped.audio_embedding)}
    distributed.finish(processes)
    return summary


def _prior_loss(model: nn.Module, text, target, not_negative, processes):
    """The prior's loss on this process's rows: their mean squared error, and the InfoNCE over the whole batch
    (the predictions and targets gathered from every process)."""
    predicted = model(text)
    mse = ((predicted - target) ** 2).mean()
    p = processes.gather(nn.functional.normalize(predicted, dim=1))
    t = processes.gather(nn.functional.normalize(target, dim=1))
    nce = _info_nce(p @ t.T / 0.1, not_negative)
    return mse + 0.1 * nce, mse.detach(), nce.detach()


def save_prior(path: Path, model: Prior, config: dict, *, version: str, audio_tower: AudioTower | None = None) -> Path:
    """Write the prior (and the audio tower, as ``tower.*``) as fp16 safetensors with its config (and the
    audio space's standardisation)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    if audio_tower is not None:
        tensors |= {f"tower.{k}": v.detach().to(torch.float16).contiguous() for k, v in audio_tower.state_dict().items()}
    save_file(tensors, str(path), metadata={"kind": PRIOR_KIND, "version": version, "config": json.dumps(config)})
    return path


def _latent_rate(latent_dir: Path) -> float:
    """Latent frames per second of the autoencoder that encoded ``latent_dir``."""
    from backline.models.autoencoder import load_autoencoder

    model, _ = load_autoencoder(latent_autoencoder(latent_dir)["path"])
    return model.config.latent_rate_hz


def render_report(report: dict) -> str:
    space = report.get("audio_space", STATISTICS_SPACE)
    lines = ["# Style encoder: retrieval on held-out stems", "",
             f"{report['train_stems']} training stems, {report['held_out_stems']} held-out (test split) stems, "
             f"audio space `{space}` ({report.get('tower_steps', 0)} tower steps), prompt prior {report['steps']} steps, "
             f"{report['wall_seconds']} s.", "",
             "Prompt: for each held-out segment (4 per stem, 2-8 s), the family prompts ranked by similarity to it. "
             "Audio: a segment's nearest among one other segment of every held-out stem.", "",
             "| instrument | stems | families | prompt R@1 (chance) | prompt R@5 (chance) | audio R@1 (chance) | audio R@5 (chance) |",
             "|---|---|---|---|---|---|---|"]
    for instrument, r in report["held_out"].items():
        lines.append(f"| {instrument} | {r['stems']} | {r['families']} | {r['prompt_recall_at_1']:.2f} ({r['prompt_chance_at_1']:.2f}) | "
                     f"{r['prompt_recall_at_5']:.2f} ({r['prompt_chance_at_5']:.2f}) | {r['audio_recall_at_1']:.2f} ({r['audio_chance_at_1']:.2f}) | "
                     f"{r['audio_recall_at_5']:.2f} ({r['audio_chance_at_5']:.2f}) |")
    if "command" in report:
        lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def store_pad(path: Path) -> Path:
    """Embed the style pad's sounds (``PAD_SOUNDS``) with the prior at ``path`` (its text tower and prior) and store
    them in the same file as ``pad.<instrument>`` with their names in its config; the rest stays as it was."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from backline.engine.style import PAD_SOUNDS, PromptEncoder

    path = Path(path)
    encoder = PromptEncoder(path)
    pads = {f"pad.{instrument}": np.stack([encoder(name) for name in names]).astype(np.float16)
            for instrument, names in PAD_SOUNDS.items()}
    with safe_open(str(path), framework="numpy") as file:
        metadata = dict(file.metadata() or {})
        tensors = {name: file.get_tensor(name) for name in file.keys() if not name.startswith("pad.")}
    config = json.loads(metadata["config"]) | {"pad_sounds": {k: list(v) for k, v in PAD_SOUNDS.items()}}
    save_file(tensors | pads, str(path), metadata=metadata | {"config": json.dumps(config)})
    return path
