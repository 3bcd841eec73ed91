"""The paired-stem data engine: render multi-track MIDI into sample-aligned (context, stem) audio.

For each piece, each soundfont and each variant, one seeded augmentation is drawn (transposition,
tempo, bass program, drum kit, effects, stem gains, context subset); every instrument group is
rendered alone with a fresh synth, so the mix is exactly the sum of the stems. Variants are written
under ``audio/<variant_id>/`` with a ``record.json``; an interrupted build resumes where it stopped.
Nothing here depends on the order pieces are processed in: every choice is seeded by the variant.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from backline.data import kits as kit_ops
from backline.data import midi as midi_ops
from backline.data import mixing
from backline.data import mma
from backline.data import scheduling
from backline.data.piece import Piece
from backline.data.sources import SOURCES, check_not_reserved
from backline.data.synth import Effects, Synth
from backline.engine.audio import db_to_gain, write_audio

SAMPLE_RATE = 44_100
TRAINING_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf3/MuseScore_General.sf3",
    "/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",
)
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
TARGETS = ("bass", "drums")
PEAK_LIMIT = 0.95
MANIFEST_EVERY = 8
STEM_LEVEL_DBFS = -26.0  # with mix chains, every stem starts here (kits and soundfonts differ by 25 dB)


@dataclass(frozen=True)
class HeldOut:
    """Sounds and style families no model trains on: the ``unseen`` split is rendered with these only."""

    soundfonts: tuple[str, ...] = ()
    drum_kits: tuple[str, ...] = ()  # kit specs (backline.data.kits)
    families: tuple[str, ...] = ()  # MMA style families


@dataclass(frozen=True)
class BuildConfig:
    sources: tuple[str, ...] = ("freedoom", "planetblupi")
    soundfonts: tuple[str, ...] = TRAINING_SOUNDFONTS
    variants_per_soundfont: int = 1
    max_pieces_per_source: int | None = None
    max_duration_seconds: float | None = None  # caps every piece (on top of a source's own cap)
    transpose_semitones: tuple[int, int] = (-5, 6)  # inclusive range
    tempo_scale: tuple[float, float] = (0.85, 1.15)
    stem_gain_db: tuple[float, float] = (-6.0, 0.0)
    seed: int = 0
    # The MMA source ("mma" in sources): each main groove over this many charts; one variant per chart,
    # its soundfont and drum kit drawn from ``soundfonts`` and ``drum_kits`` (the held-out ones for the
    # unseen split). Without drum kits, a soundfont's own GM kits are drawn.
    charts_per_groove: int = 2
    max_grooves: int | None = None  # at most this many main grooves, spread over the style families
    drum_kits: tuple[str, ...] = ()
    held_out: HeldOut = HeldOut()
    mix_chains: bool = False  # per-track EQ, compression and reverb (backline.data.mixing)
    full_context_share: float = 0.0  # share of pairs whose context is every other stem


def _broad_held_out() -> HeldOut:
    opl3 = "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2"
    avl = tuple(kit_ops.avl_kits()) + ("hydrogen:" + str(kit_ops.HYDROGEN_KITS / "The Black Pearl 1.0"),)
    return HeldOut(soundfonts=(opl3,), drum_kits=avl, families=("reggae", "bossa-samba", "march-polka"))


BROAD_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/MuseScore_General_Full.sf2",
    "/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",
)


def _broad_kits() -> tuple[str, ...]:
    held = set(_broad_held_out().drum_kits)
    kits = [k for sf in BROAD_SOUNDFONTS for k in kit_ops.soundfont_kits(sf, (0, 8, 16, 24, 25, 32, 40))]
    return tuple(kits + [k for k in kit_ops.hydrogen_kits() if k not in held])


PRESETS = {
    # A few minutes of pairs in about a minute on two cores: for tests, demos and smoke runs.
    "small": BuildConfig(
        sources=("freedoom",),
        soundfonts=(TRAINING_SOUNDFONTS[0],),
        max_pieces_per_source=8,
        max_duration_seconds=20.0,
    ),
    # Every source with every training soundfont (music21 when its optional extra is installed).
    "full": BuildConfig(sources=tuple(name for name in ("freedoom", "planetblupi", "music21") if name in SOURCES)),
}
# MMA grooves over charts, many sounds, mix chains and an unseen-sound split (built lazily: they look
# for Debian's kits and soundfonts).
LAZY_PRESETS = {
    # Every MMA groove over three charts: about 75 h of (context, stem) pairs.
    "broad": lambda: BuildConfig(sources=("mma",), soundfonts=BROAD_SOUNDFONTS, drum_kits=_broad_kits(),
                                 held_out=_broad_held_out(), charts_per_groove=3, mix_chains=True,
                                 full_context_share=0.7, stem_gain_db=(-4.0, 0.0)),
    # The same recipe on 24 grooves, 30 s each at most: for CI, demos and smoke runs.
    "broad-small": lambda: BuildConfig(sources=("mma",), soundfonts=BROAD_SOUNDFONTS, drum_kits=_broad_kits(),
                                       held_out=_broad_held_out(), charts_per_groove=1, max_grooves=24,
                                       max_duration_seconds=30.0, mix_chains=True, full_context_share=0.7,
                                       stem_gain_db=(-4.0, 0.0)),
}


def preset(name: str) -> BuildConfig:
    if name in PRESETS:
        return PRESETS[name]
    if name in LAZY_PRESETS:
        return LAZY_PRESETS[name]()
    raise ValueError(f"unknown preset {name!r}; known: {', '.join(list(PRESETS) + list(LAZY_PRESETS))}")


def split_of(piece_id: str) -> str:
    """Train / validation / test by a hash of the piece id: a piece never lands in two splits."""
    position = int(hashlib.sha1(piece_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    cumulative = 0.0
    for split, fraction in SPLIT_FRACTIONS.items():
        cumulative += fraction
        if position < cumulative:
            return split
    return "test"


def _seed(*parts: object) -> int:
    return int(hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16], 16)


@dataclass(frozen=True)
class Variant:
    variant_id: str
    piece: Piece | None  # None for an MMA song: mma runs in the worker
    soundfont: str
    index: int
    config: BuildConfig
    song: mma.Song | None = None
    drum_kit: str | None = None  # a kit spec; None: the soundfont's GM kits
    split: str | None = None  # None: split_of(piece id)

    @property
    def rng(self) -> np.random.Generator:
        piece_id = self.piece.piece_id if self.piece is not None else self.song.chart.chart_id
        return np.random.default_rng(_seed(self.config.seed, piece_id, Path(self.soundfont).name, self.index))


def _spread(grooves: list[mma.Groove], count: int | None) -> list[mma.Groove]:
    """At most ``count`` main grooves, taken in turn from each style family (all of them for None)."""
    main = [g for g in grooves if g.kind == "main" and (g.has_bass or g.has_drums)]
    if count is None:
        return grooves
    by_family: dict[str, list[mma.Groove]] = {}
    for groove in main:
        by_family.setdefault(groove.family, []).append(groove)
    chosen: list[mma.Groove] = []
    while len(chosen) < min(count, len(main)):
        for family in sorted(by_family):
            if by_family[family] and len(chosen) < count:
                chosen.append(by_family[family].pop(0))
    names = {g.groove_id for g in chosen}
    return [g for g in grooves if g.groove_id in names or g.kind != "main"]


def mma_split(song: mma.Song, held_out: HeldOut) -> str:
    """``unseen`` for a held-out style family, else train/validation/test by style file (a style file's
    grooves are near relatives, so none of them crosses a split; every chart is its own)."""
    return "unseen" if song.groove.family in held_out.families else split_of(song.groove.style_file)


def plan_mma(config: BuildConfig, out_dir: Path | None = None) -> list[Variant]:
    """One variant per (MMA song, index): its soundfont and kit drawn from the training sounds, or from
    the held-out sounds for the unseen split."""
    training_kits = config.drum_kits
    for kit in training_kits + config.held_out.drum_kits:
        check_not_reserved(kit)
        kit_ops.Kit(kit).check()
    for soundfont in config.held_out.soundfonts:
        check_not_reserved(soundfont)
    cache = out_dir / "mma_catalogue.json" if out_dir is not None else None
    variants = []
    for song in _songs(config.max_grooves, config.charts_per_groove, config.seed, cache):
        split = mma_split(song, config.held_out)
        unseen = split == "unseen"
        soundfonts = config.held_out.soundfonts if unseen and config.held_out.soundfonts else config.soundfonts
        kits = config.held_out.drum_kits if unseen and config.held_out.drum_kits else training_kits
        for index in range(config.variants_per_soundfont):
            rng = np.random.default_rng(_seed(config.seed, song.chart.chart_id, index, "sounds"))
            soundfont = soundfonts[int(rng.integers(len(soundfonts)))]
            kit = kits[int(rng.integers(len(kits)))] if kits else None
            variant_id = f"mma_{_safe(song.chart.chart_id)}__v{index}"
            variants.append(Variant(variant_id, None, soundfont, index, config, song=song, drum_kit=kit, split=split))
    return variants


def _songs(max_grooves: int | None, charts_per_groove: int, seed: int, cache: Path | None) -> list[mma.Song]:
    """The MMA songs a build plans: its grooves over generated and real charts."""
    grooves = _spread(mma.catalogue(cache=cache), max_grooves)
    charts = mma.real_charts(p for name in ("freedoom", "planetblupi") if name in SOURCES for p in SOURCES[name].pieces())
    return mma.songs(grooves, charts_per_groove=charts_per_groove, seed=seed, real_charts=charts)


@functools.lru_cache(maxsize=2)
def _built_songs(build_dir: str) -> dict[str, mma.Song]:
    config = json.loads((Path(build_dir) / "report.json").read_text())["config"]
    songs = _songs(config["max_grooves"], config["charts_per_groove"], config["seed"],
                   Path(build_dir) / "mma_catalogue.json")
    return {song.chart.chart_id: song for song in songs}


def mma_midi(build_dir: str | Path, record: dict) -> bytes:
    """The MIDI an MMA variant of ``build_dir`` was rendered from, made again (``mma`` is deterministic here:
    the song's arrangement is seeded by its chart)."""
    song = _built_songs(str(Path(build_dir).resolve()))[record["mma"]["chart_id"]]
    return mma.song_piece(song, record["split"]).midi_bytes


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def plan(config: BuildConfig, pieces: list[Piece] | None = None, *, out_dir: Path | None = None) -> list[Variant]:
    """Every variant a build would render, in a fixed order."""
    for soundfont in config.soundfonts:
        check_not_reserved(soundfont)
        if not Path(soundfont).is_file():
            raise FileNotFoundError(f"{soundfont}: soundfont not found (apt-get install the package that ships it)")
    variants = plan_mma(config, out_dir) if pieces is None and "mma" in config.sources else []
    if pieces is None:
        pieces = []
        for name in config.sources:
            check_not_reserved(name)
            if name == "mma":
                continue
            if name not in SOURCES:
                raise ValueError(f"unknown source {name!r}; known: mma, {', '.join(SOURCES)}")
            source_pieces = list(SOURCES[name].pieces())
            pieces.extend(source_pieces[: config.max_pieces_per_source])
    for piece in pieces:
        check_not_reserved(piece.origin)
    # soundfont-major, so a partial build already covers every piece once
    for soundfont in config.soundfonts if pieces else ():
        for piece in pieces:
            for index in range(config.variants_per_soundfont):
                variant_id = f"{piece.piece_id.replace('/', '_')}__{Path(soundfont).stem}__v{index}"
                variants.append(Variant(variant_id, piece, soundfont, index, config))
    return variants


def _kit_record(variant: Variant, program: int | None) -> dict:
    if variant.drum_kit is None:
        spec = f"sf2:{variant.soundfont}#{program}"
    else:
        spec = variant.drum_kit
    kit = kit_ops.Kit(spec)
    return {"spec": spec, "name": kit.name, "kind": kit.kind, "licence": kit.licence}


def render_variant(variant: Variant, out_dir: Path) -> dict:
    """Render one variant into ``out_dir/audio/<variant_id>``; return its manifest record.

    Raises ``midi_ops.MidiError`` (or another exception) for a piece that cannot be used.
    """
    config, rng = variant.config, variant.rng
    piece = variant.piece if variant.song is None else mma.song_piece(variant.song, variant.split)
    midi = midi_ops.parse(piece.midi_bytes)
    groups = midi_ops.channel_groups(midi)
    targets = [t for t in TARGETS if t in groups]
    if not targets:
        raise midi_ops.MidiError("no bass or drum part")
    if len(groups) < 2:
        raise midi_ops.MidiError("only one instrument group: no context to accompany")

    caps = [c for c in (piece.max_duration_seconds, config.max_duration_seconds) if c is not None]
    arranged = variant.song is not None  # MMA songs come in their key, tempo and sounds already
    kit = kit_ops.Kit(variant.drum_kit) if variant.drum_kit else None
    aug = midi_ops.Augmentation(
        transpose_semitones=0 if arranged else int(rng.integers(config.transpose_semitones[0], config.transpose_semitones[1] + 1)),
        tempo_scale=1.0 if arranged else round(float(rng.uniform(*config.tempo_scale)), 3),
        bass_program=None if arranged else (int(rng.integers(32, 40)) if "bass" in groups else None),
        drum_kit=(kit.program if kit else int(rng.choice(midi_ops.DRUM_KITS))) if "drums" in groups else None,
        max_duration_seconds=min(caps) if caps else None,
    )
    effects = Effects() if config.mix_chains else Effects(
        reverb=bool(rng.random() < 0.7),
        reverb_room_size=round(float(rng.uniform(0.1, 0.7)), 3),
        reverb_damp=round(float(rng.uniform(0.0, 0.5)), 3),
        reverb_level=round(float(rng.uniform(0.3, 0.9)), 3),
        chorus=bool(rng.random() < 0.3),
    )
    gains_db = {g: round(float(rng.uniform(*config.stem_gain_db)), 2) for g in groups}
    chains = {g: mixing.draw_chain(rng, g) for g in groups} if config.mix_chains else {}
    augmented = midi_ops.augment(midi, aug, groups)
    duration_seconds = augmented.length

    stems: dict[str, np.ndarray] = {}
    synths: dict[str, Synth] = {}  # with mix chains (no FluidSynth effects), one synth per soundfont per
    try:                           # variant: loading MuseScore's sf2 or an sf3 costs more than a stem
        for group, channels in groups.items():
            stem_midi = midi_ops.to_bytes(midi_ops.extract_channels(augmented, channels))
            soundfont = kit.location if group == "drums" and kit is not None else variant.soundfont
            synth = None
            if config.mix_chains and not (group == "drums" and kit is not None and kit.kind == "hydrogen"):
                synth = synths.get(soundfont) or synths.setdefault(soundfont, Synth(soundfont, SAMPLE_RATE, effects))
            if group == "drums" and kit is not None:
                audio = kit.render(stem_midi, duration_seconds, SAMPLE_RATE, effects, synth=synth)
            elif synth is not None:
                audio = synth.render(stem_midi, duration_seconds)
            else:
                with Synth(variant.soundfont, SAMPLE_RATE, effects) as fresh:  # fresh synth: exact repeatability
                    audio = fresh.render(stem_midi, duration_seconds)
            if group in chains:
                audio = mixing.apply_chain(mixing.level_to(audio, STEM_LEVEL_DBFS), SAMPLE_RATE, chains[group])
            stems[group] = audio * db_to_gain(gains_db[group])
    finally:
        for synth in synths.values():
            synth.close()
    frames = len(stems[targets[0]])
    silent = [g for g, s in stems.items() if np.abs(s).max() < 1e-4]
    for group in silent:  # e.g. all its notes fell after the trim point
        del stems[group]
    targets = [t for t in targets if t in stems]
    if not targets or len(stems) < 2:
        raise midi_ops.MidiError("target or context silent after trimming")

    mix = np.sum(list(stems.values()), axis=0)
    peak = float(np.abs(mix).max())
    level_db = 0.0
    if peak > PEAK_LIMIT:  # one gain for every stem keeps mix == sum(stems)
        level_db = 20 * np.log10(PEAK_LIMIT / peak)
        stems = {g: s * db_to_gain(level_db) for g, s in stems.items()}
        mix = np.sum(list(stems.values()), axis=0)

    rel = Path("audio") / variant.variant_id
    folder = out_dir / rel
    if folder.exists():
        shutil.rmtree(folder)
    record_stems = {}
    for group, audio in stems.items():
        write_audio(folder / "stems" / f"{group}.flac", audio, SAMPLE_RATE, subtype="PCM_24")
        record_stems[group] = str(rel / "stems" / f"{group}.flac")
    write_audio(folder / "mix.flac", mix, SAMPLE_RATE, subtype="PCM_24")
    pairs = {}
    for target in targets:
        others = [g for g in stems if g != target]
        if rng.random() < config.full_context_share:
            chosen = others
        else:
            count = int(rng.integers(1, len(others) + 1))
            chosen = sorted(rng.choice(others, size=count, replace=False).tolist(), key=midi_ops.STEM_GROUPS.index)
        context = np.sum([stems[g] for g in chosen], axis=0)
        write_audio(folder / target / "context.flac", context, SAMPLE_RATE, subtype="PCM_24")
        pairs[target] = {
            "target": record_stems[target],  # the stem itself, not a copy (a fifth of a variant's disk)
            "context": str(rel / target / "context.flac"),
            "context_stems": chosen,
            "target_wet": bool(chains[target].wet) if target in chains else bool(effects.reverb or effects.chorus),
        }
    programs = {"bass": aug.bass_program, "drum_kit": aug.drum_kit}
    record = {
        "variant_id": variant.variant_id,
        "piece_id": piece.piece_id,
        "source": piece.source,
        "licence": piece.licence,
        "origin": piece.origin,
        "soundfont": Path(variant.soundfont).name,
        "soundfont_licence": kit_ops.Kit(f"sf2:{variant.soundfont}#0").licence,
        "programs": programs,
        "channel_groups": groups,
        "transpose_semitones": aug.transpose_semitones,
        "tempo_scale": aug.tempo_scale,
        "effects": asdict(effects),
        "gains_db": gains_db,
        "level_db": round(level_db, 3),
        "duration_seconds": round(frames / SAMPLE_RATE, 4),
        "frames": frames,
        "sample_rate": SAMPLE_RATE,
        "split": variant.split or split_of(piece.piece_id),
        "seed": variant.config.seed,
        "stems": record_stems,
        "mix": str(rel / "mix.flac"),
        "pairs": pairs,
    }
    if "drums" in groups:
        record["kit"] = _kit_record(variant, aug.drum_kit)
    if chains:
        record["mix_chains"] = {g: mixing.describe(c) for g, c in chains.items() if g in stems}
    if piece.meta:
        record["mma"] = piece.meta
    (folder / "record.json").write_text(json.dumps(record, indent=1))
    return record


def _render_task(args: tuple[Variant, Path]) -> tuple[str, dict | None, str | None, float]:
    variant, out_dir = args
    start = time.perf_counter()
    existing = out_dir / "audio" / variant.variant_id / "record.json"
    if existing.is_file():  # resume: a variant is complete once its record is written
        return variant.variant_id, json.loads(existing.read_text()), None, 0.0
    try:
        record = render_variant(variant, out_dir)
    except Exception as error:  # one bad piece never stops a build
        shutil.rmtree(out_dir / "audio" / variant.variant_id, ignore_errors=True)
        return variant.variant_id, None, f"{type(error).__name__}: {error}", time.perf_counter() - start
    return variant.variant_id, record, None, time.perf_counter() - start


def _write_manifest(out_dir: Path, records: list[dict]) -> None:
    """Write manifest.jsonl sorted by variant id, atomically (readers never see half a file)."""
    temporary = out_dir / "manifest.jsonl.partial"
    with open(temporary, "w") as manifest:
        for record in sorted(records, key=lambda r: r["variant_id"]):
            manifest.write(json.dumps(record, sort_keys=True) + "\n")
    temporary.replace(out_dir / "manifest.jsonl")


@dataclass
class BuildReport:
    built: int = 0
    reused: int = 0
    skipped: list[dict] = field(default_factory=list)
    audio_seconds_rendered: float = 0.0
    render_seconds: float = 0.0
    wall_seconds: float = 0.0
    jobs: int = 1


def build(
    config: BuildConfig,
    out_dir: str | Path,
    *,
    pieces: list[Piece] | None = None,
    jobs: int | None = None,
    progress=None,
    only: set[str] | None = None,
    cluster: str | None = None,
) -> BuildReport:
    """Render every planned variant into ``out_dir`` and write ``manifest.jsonl`` and ``report.json``.

    ``progress(done, total, variant_id)`` is called after each variant; ``only``: render just these
    variant ids of the plan; ``cluster``: a Dask scheduler's address, or ``"local"`` (data/scheduling.py),
    else ``jobs`` local processes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wall_start = time.perf_counter()
    variants = [v for v in plan(config, pieces, out_dir=out_dir) if only is None or v.variant_id in only]
    jobs = max(1, jobs or os.cpu_count() or 1)
    report = BuildReport(jobs=jobs)
    records = []
    tasks = [(v, out_dir) for v in variants]
    with scheduling.tasks(jobs, cluster) as run:
        for done, (variant_id, record, reason, seconds) in enumerate(run(_render_task, tasks), 1):
            if record is None:
                report.skipped.append({"variant_id": variant_id, "reason": reason})
            else:
                records.append(record)
                if seconds:
                    report.built += 1
                    report.render_seconds += seconds
                    report.audio_seconds_rendered += record["duration_seconds"] * (len(record["stems"]))
                else:
                    report.reused += 1
            if progress:
                progress(done, len(tasks), variant_id)
            if done % MANIFEST_EVERY == 0:  # a long build is usable while it runs
                _write_manifest(out_dir, records)
    _write_manifest(out_dir, records)
    report.wall_seconds = round(time.perf_counter() - wall_start, 2)
    summary = asdict(report)
    summary["config"] = asdict(config)
    summary["sources"] = {name: {"licence": SOURCES[name].licence, "provenance": SOURCES[name].provenance}
                          for name in config.sources if name in SOURCES}
    if "mma" in config.sources:
        summary["sources"]["mma"] = {"licence": mma.MMA_LICENCE, "provenance": mma.__doc__.split("\n\n")[0]}
    (out_dir / "report.json").write_text(json.dumps(summary, indent=1))
    return report
