"""The MMA source: human-written grooves from Debian's ``mma`` (Musical MIDI Accompaniment, GPL-2+)
played over chord charts, through the real ``mma`` program (a subprocess; its output is MIDI).

``catalogue()`` lists every groove of MMA's style libraries (``mma -Djs`` per style file) with its style
family, meter and tracks. ``pieces()`` pairs each main groove that has a bass or a drum part with
seeded charts (``backline.data.charts``: generated progressions, and chords read out of the licensed
MIDI we already have), adds the groove's intro, fill and ending variants where the style file has them,
MMA's humanising (``RTime``, ``RVolume``; swing stays as each style writes it), and a melody drawn from
chord tones on a free channel. Roles are set by track, not by the style's choice of voice: every
``Bass``/``Walk`` track that plays low is the bass stem (program 32-39), ``Drum`` tracks are the drum
stem (channel 10), and everything else is the context.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import mido
import numpy as np

from backline.data import charts as chart_ops
from backline.data import midi as midi_ops
from backline.data.piece import Piece

MMA_LIBRARY = Path("/usr/share/mma/lib")
MMA_LICENCE = "GPL-2+ (mma style files)"
CHART_LICENCE = "generated here (MIT, with the project)"
EXCLUDED_FILES = ("metronome", "none")  # click tracks and the empty style

# Style family by keyword in the style file's name, first match wins (meter families before genres).
FAMILY_KEYWORDS = (
    ("reggae", ("reggae", "ska")),
    ("bossa-samba", ("bossa", "samba")),
    ("march-polka", ("march", "polka")),
    ("waltz", ("waltz", "68swing", "quando")),
    ("ballad", ("ballad", "lullaby", "serenade")),
    ("fusion", ("fusion", "fus16", "jazzrock")),
    ("latin", ("afro", "beguine", "bolero", "chacha", "mambo", "merengue", "rhumba", "salsa", "son", "tango",
               "calypso", "latin", "cuban")),
    ("blues", ("blues", "boggie", "shuffle")),
    ("country-folk", ("country", "bluegrass", "western", "cntry", "count", "zydeco", "folk", "hymn", "spiritual",
                      "desert")),
    ("jazz-swing", ("bebop", "jazz", "swing", "bigband", "dixie", "ragtime", "charleston", "evansish", "softshoe",
                    "foxtrot", "quickstep", "jive", "showtune", "broadway", "strut")),
    ("funk-soul", ("funk", "soul", "rb", "r+b", "rnb", "motown", "boneym", "2beatp")),
    ("dance-electronic", ("dance", "disco", "house", "techno", "trance", "rave", "dnb", "hip", "trip", "ambient",
                          "electricpop", "thr", "bald", "mide")),
    ("rock", ("rock", "metal", "punk", "hrk", "mtl", "twist", "twi", "beat", "highfive")),
    ("pop", ("pop", "arpeggio", "happy", "kara")),
)
# Natural tempo ranges (BPM) per family; overall 60 to 180.
FAMILY_TEMPO_BPM = {
    "reggae": (64, 100), "bossa-samba": (100, 150), "march-polka": (96, 132), "waltz": (84, 180),
    "ballad": (60, 88), "fusion": (88, 130), "latin": (90, 140), "blues": (66, 132), "country-folk": (80, 160),
    "jazz-swing": (96, 180), "funk-soul": (80, 116), "dance-electronic": (100, 140), "rock": (88, 160),
    "pop": (84, 132), "other": (80, 140),
}
VARIANT_KINDS = ("intro", "end", "fill", "break")

# General MIDI programs per role, by family (any draw sounds like what that role plays).
BASS_PROGRAMS = tuple(range(32, 40))  # acoustic, finger, pick, fretless, slap 1-2, synth 1-2
CONTEXT_PROGRAMS = {
    "piano": (0, 1, 2, 4, 5, 7), "organ": (16, 17, 18, 19), "guitar": (24, 25, 26, 27, 28, 29, 30),
    "strings": (48, 49, 50, 51), "pad": (88, 89, 90, 91, 92, 94, 95), "brass": (56, 57, 61, 62, 63),
    "mallets": (8, 9, 11, 12), "reed": (64, 65, 66, 71),
}
MELODY_PROGRAMS = (56, 65, 66, 71, 73, 80, 81, 11, 0, 40, 22, 26)  # trumpet, saxes, flute, leads, vibes...
BASS_MEDIAN_MAX = 55  # a Bass/Walk track whose median note is above G3 plays a figure, not the bass line


class MmaError(RuntimeError):
    """``mma`` is missing or refused a chart; the message says why."""


@dataclass(frozen=True)
class Groove:
    name: str
    style_file: str  # relative to MMA_LIBRARY, e.g. "stdlib/bossanova.mma"
    family: str
    beats_per_bar: int
    tracks: tuple[str, ...]
    kind: str  # "main", "intro", "end", "fill" or "break"
    sequence_bars: int
    description: str

    @property
    def has_bass(self) -> bool:
        return any(t.split("-")[0] in ("BASS", "WALK") for t in self.tracks)

    @property
    def has_drums(self) -> bool:
        return any(t.split("-")[0] == "DRUM" for t in self.tracks)

    @property
    def groove_id(self) -> str:
        return f"{self.style_file.removesuffix('.mma')}:{self.name}"


def mma_executable() -> str:
    path = shutil.which("mma")
    if path is None:
        raise MmaError("the MMA source needs Debian's `mma` (apt-get install mma)")
    return path


def family_of(style_file: str) -> str:
    stem = Path(style_file).stem.lower()
    for family, keywords in FAMILY_KEYWORDS:
        if any(k in stem for k in keywords):
            return family
    return "other"


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind in VARIANT_KINDS:
        if kind in lowered:
            return kind
    return "main"


def _meters(text: str) -> dict[str, int]:
    """Beats per bar in force at each ``DefGroove`` of a style file (``Time N`` lines, default 4)."""
    meters, beats = {}, 4
    for line in text.splitlines():
        words = line.split("//")[0].split()
        if len(words) >= 2 and words[0].lower() == "time" and words[1].isdigit():
            beats = int(words[1])
        elif len(words) >= 2 and words[0].lower() == "defgroove":
            meters[words[1].lower()] = beats
    return meters


def style_file_grooves(path: Path, library: Path = MMA_LIBRARY) -> list[Groove]:
    """Every groove one style file defines, read by ``mma -Djs`` (MMA's own JSON groove listing)."""
    run = subprocess.run([mma_executable(), "-w", "-Djs", str(path)], capture_output=True, text=True, timeout=120)
    text = run.stdout
    if run.returncode != 0 or "[" not in text:
        return []
    try:
        entries = json.loads(text[text.index("["):])
    except json.JSONDecodeError:
        return []
    meters = _meters(path.read_text(errors="replace"))
    relative = str(path.relative_to(library))
    grooves = []
    for entry in entries:
        name = entry["groove"]
        grooves.append(Groove(
            name=name, style_file=relative, family=family_of(relative),
            beats_per_bar=meters.get(name.lower(), 4),
            tracks=tuple(sorted(t["track"] for t in entry.get("tracks", ()))),
            kind=kind_of(name), sequence_bars=int(entry.get("size") or 1),
            description=" ".join(str(entry.get("description", "")).split()),
        ))
    return grooves


def catalogue(library: Path = MMA_LIBRARY, *, cache: Path | None = None) -> list[Groove]:
    """Every groove of every style file under ``library`` (cached as JSON in ``cache`` when given)."""
    if cache is not None and cache.is_file():
        return [Groove(**{**g, "tracks": tuple(g["tracks"])}) for g in json.loads(cache.read_text())]
    grooves = []
    for path in sorted(library.glob("*/*.mma")):
        if Path(path).stem.lower().startswith(EXCLUDED_FILES):
            continue
        grooves.extend(style_file_grooves(path, library))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps([asdict(g) for g in grooves], indent=0))
    return grooves


def _seed(*parts: object) -> int:
    return int(hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16], 16)


@dataclass(frozen=True)
class Song:
    """One chart over one groove, with the groove variants it opens and closes with."""

    chart: chart_ops.Chart
    groove: Groove
    intro: Groove | None
    end: Groove | None
    fill: Groove | None
    rtime: int  # MMA's RTime: random timing, in MIDI ticks (192 per beat)
    rvolume: int  # MMA's RVolume: random velocity, in percent
    melody: bool

    @property
    def seed(self) -> int:
        """MMA's own random seed (``RndSeed``) for this song, so its humanising repeats exactly."""
        return _seed("mma", self.chart.chart_id) % 2**31

    def mma_text(self) -> str:
        """The song as an MMA file: its seed, groove switches, humanising after each switch, the chart's bars."""
        lines = [f"RndSeed {self.seed}", f"Tempo {self.chart.tempo_bpm:g}"]
        bars = self.chart.mma_lines()
        count = len(bars)
        plan = [self.groove.name] * count
        if self.intro is not None:
            for i in range(min(self.intro.sequence_bars, 4, count // 4)):
                plan[i] = self.intro.name
        if self.end is not None:
            span = min(self.end.sequence_bars, 2, count // 4)
            for i in range(count - span, count):
                plan[i] = self.end.name
        if self.fill is not None:
            for i in range(7, count - 1, 8):  # the last bar of each 8-bar phrase
                if plan[i] == self.groove.name:
                    plan[i] = self.fill.name
        current = None
        for groove_name, bar in zip(plan, bars):
            if groove_name != current:
                lines += [f"Groove {groove_name}", f"AllTracks RTime {self.rtime}", f"AllTracks RVolume {self.rvolume}"]
                current = groove_name
            lines.append(bar)
        return "\n".join(lines) + "\n"


def run_mma(text: str, *, timeout_seconds: float = 60.0) -> bytes:
    """Run ``mma`` on an MMA file's text and return the MIDI it writes."""
    with tempfile.TemporaryDirectory(prefix="backline-mma-") as folder:
        source, out = Path(folder) / "song.mma", Path(folder) / "song.mid"
        source.write_text(text)
        run = subprocess.run([mma_executable(), "-w", "-f", str(out), str(source)], capture_output=True, text=True,
                             timeout=timeout_seconds, cwd=folder)
        if run.returncode != 0 or not out.is_file():
            message = " ".join((run.stdout + run.stderr).split())
            raise MmaError(f"mma refused the chart: {message[-300:]}")
        return out.read_bytes()


def _track_role(track: mido.MidiTrack) -> tuple[str | None, set[int], list[int]]:
    """(MMA track type, channels, notes) of one MIDI track MMA wrote."""
    name = next((m.name for m in track if m.type == "track_name"), "")
    channels = {m.channel for m in track if m.type == "note_on" and m.velocity > 0}
    notes = [m.note for m in track if m.type == "note_on" and m.velocity > 0]
    kind = name.split("-")[0].strip().upper() or None
    return kind, channels, notes


def assign_roles(midi: mido.MidiFile) -> dict[int, str]:
    """Channel -> ``"bass"``, ``"drums"`` or ``"context"`` from MMA's track names and registers."""
    roles: dict[int, str] = {}
    for track in midi.tracks:
        kind, channels, notes = _track_role(track)
        for channel in channels:
            if channel == midi_ops.DRUM_CHANNEL:
                role = "drums"
            elif kind in ("BASS", "WALK") and notes and float(np.median(notes)) <= BASS_MEDIAN_MAX:
                role = "bass"
            else:
                role = "context"
            if roles.get(channel) not in ("bass", "drums"):  # a shared channel keeps its strongest role
                roles[channel] = role
    return roles


def melody_events(chart: chart_ops.Chart, rng: np.random.Generator, ticks_per_beat: int, channel: int,
                  program: int) -> list[tuple[int, mido.Message]]:
    """A melody drawn from the chart's chord tones: phrases of quarters, eighths and halves with rests,
    stepping between nearby chord tones (and a passing scale tone now and then), C4 to C6."""
    events = [(0, mido.Message("program_change", channel=channel, program=program))]
    changes = chart.chord_at_beats() + [(len(chart.bars) * chart.beats_per_bar, None)]
    total_beats = changes[-1][0]
    pitch, beat = 60 + int(rng.integers(0, 12)), 0.0
    while beat < total_beats:
        length = float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))
        if rng.random() < 0.2:  # rest
            beat += length
            continue
        symbol = next(s for (start, s), (stop, _) in zip(changes, changes[1:]) if start <= beat < stop)
        _, pcs, _ = chart_ops.chord_pitch_classes(symbol)
        candidates = [n for n in range(pitch - 7, pitch + 8) if n % 12 in pcs and 60 <= n <= 84] or [pitch]
        weights = np.array([1.0 / (1 + abs(n - pitch)) for n in candidates])
        pitch = int(rng.choice(candidates, p=weights / weights.sum()))
        if rng.random() < 0.15 and beat % 1 == 0.5:  # a passing tone a step away
            pitch = max(60, min(84, pitch + int(rng.choice([-2, -1, 1, 2]))))
        start = int(beat * ticks_per_beat)
        stop = int(min(beat + length * 0.9, total_beats) * ticks_per_beat)
        velocity = int(rng.integers(70, 105))
        events.append((start, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)))
        events.append((stop, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
        beat += length
    return events


def arrange(midi_bytes: bytes, song: Song, rng: np.random.Generator) -> tuple[bytes, dict]:
    """MMA's MIDI with roles made explicit: bass channels on a bass program, context channels on programs
    from sensible families (never a bass program), a melody added when the song has one.

    Returns the MIDI bytes and what was chosen (roles and programs per channel) for the manifest.
    """
    midi = midi_ops.parse(midi_bytes)
    roles = assign_roles(midi)
    if "bass" not in roles.values() and "drums" not in roles.values():
        raise midi_ops.MidiError("the groove played no bass and no drums over this chart")
    programs: dict[int, int] = {}
    bass_program = int(rng.choice(BASS_PROGRAMS))
    for channel, role in sorted(roles.items()):
        if role == "bass":
            programs[channel] = bass_program
        elif role == "context":
            family = list(CONTEXT_PROGRAMS)[int(rng.integers(len(CONTEXT_PROGRAMS)))]
            programs[channel] = int(rng.choice(CONTEXT_PROGRAMS[family]))
    out = mido.MidiFile(type=1, ticks_per_beat=midi.ticks_per_beat)
    for track in midi.tracks:
        events, tick = [], 0
        for message in track:
            tick += message.time
            if message.type == "program_change" and message.channel in programs:
                message = message.copy(program=programs[message.channel])
            events.append((tick, message))
        first = [(0, mido.Message("program_change", channel=c, program=p))
                 for c, p in programs.items() if c in _track_role(track)[1]]
        out.tracks.append(midi_ops.track_from_events(first + events))
    melody = None
    free = [c for c in range(16) if c != midi_ops.DRUM_CHANNEL and c not in roles]
    if song.melody and free:
        melody = {"channel": free[0], "program": int(rng.choice(MELODY_PROGRAMS))}
        events = melody_events(song.chart, rng, midi.ticks_per_beat, melody["channel"], melody["program"])
        events.append((max(t for t, _ in events), mido.MetaMessage("end_of_track")))
        out.tracks.append(midi_ops.track_from_events(events))
        roles[melody["channel"]] = "melody"
        programs[melody["channel"]] = melody["program"]
    return midi_ops.to_bytes(out), {"roles": {str(c): r for c, r in sorted(roles.items())},
                                    "programs": {str(c): p for c, p in sorted(programs.items())}}


def _variant_of(main: Groove, kind: str, by_file: dict[str, list[Groove]]) -> Groove | None:
    """The style file's intro/end/fill for ``main``: the one named after it, else the file's first."""
    options = [g for g in by_file[main.style_file] if g.kind == kind and g.beats_per_bar == main.beats_per_bar]
    named = [g for g in options if g.name.lower().startswith(main.name.lower())]
    return (named or options or [None])[0]


def songs(grooves: list[Groove], *, charts_per_groove: int, seed: int,
          real_charts: list[chart_ops.Chart] | None = None, real_chart_share: float = 0.25) -> list[Song]:
    """Every main groove with a bass or drum part, each over ``charts_per_groove`` seeded charts.

    A quarter of the charts (``real_chart_share``) are chord sequences read out of licensed MIDI, when
    ``real_charts`` are given; the rest come from the progression generator.
    """
    by_file: dict[str, list[Groove]] = {}
    for groove in grooves:
        by_file.setdefault(groove.style_file, []).append(groove)
    out = []
    for groove in grooves:
        if groove.kind != "main" or not (groove.has_bass or groove.has_drums):
            continue
        for index in range(charts_per_groove):
            rng = np.random.default_rng(_seed(seed, groove.groove_id, index))
            low, high = FAMILY_TEMPO_BPM[groove.family]
            tempo = float(rng.uniform(low, high))
            chart_id = f"{groove.groove_id}#{index}"
            if real_charts and rng.random() < real_chart_share:
                real = real_charts[int(rng.integers(len(real_charts)))]
                chart = fit_chart(real, chart_id, beats_per_bar=groove.beats_per_bar, tempo_bpm=tempo,
                                  transpose=int(rng.integers(-5, 7)))
            else:
                chart = chart_ops.generate_chart(chart_id, rng, beats_per_bar=groove.beats_per_bar, tempo_bpm=tempo)
            out.append(Song(
                chart=chart, groove=groove,
                intro=_variant_of(groove, "intro", by_file) if rng.random() < 0.4 else None,
                end=_variant_of(groove, "end", by_file) if rng.random() < 0.4 else None,
                fill=_variant_of(groove, "fill", by_file) if rng.random() < 0.4 else None,
                rtime=int(rng.integers(3, 16)), rvolume=int(rng.integers(5, 21)),
                melody=bool(rng.random() < 0.5),
            ))
    return out


def fit_chart(real: chart_ops.Chart, chart_id: str, *, beats_per_bar: int, tempo_bpm: float, transpose: int
              ) -> chart_ops.Chart:
    """A real chord sequence re-timed to a groove's meter and tempo (one chord per bar) and transposed."""
    bars = []
    for bar in real.bars[:32]:
        symbol = bar[0][0]
        body, _, over = symbol.partition("/")
        root, quality = chart_ops.parse_root(body)
        bass = chart_ops.parse_root(over)[0] + transpose if over else None
        bars.append(((chart_ops.chord_symbol(root + transpose, quality, bass), beats_per_bar),))
    symbols = [bar[0][0] for bar in bars]
    return chart_ops.Chart(chart_id, tuple(bars), round(tempo_bpm, 1), beats_per_bar, real.form,
                           chart_ops.estimate_key(symbols))


def real_charts(pieces: Iterator[Piece], *, bars: int = 32) -> list[chart_ops.Chart]:
    """Chord sequences read out of licensed multi-track MIDI (one chord per bar, drums left out)."""
    out = []
    for piece in pieces:
        try:
            midi = midi_ops.parse(piece.midi_bytes)
        except midi_ops.MidiError:
            continue
        notes, ticks = midi_ops.note_spans(midi), midi.ticks_per_beat
        spans = [(s / ticks, e / ticks, n, v) for s, e, n, v, c in notes if c != midi_ops.DRUM_CHANNEL]
        if len(spans) < 16:
            continue
        total_beats = min(max(e for _, e, _, _ in spans), bars * 4)
        symbols = chart_ops.chords_from_notes(spans, total_beats, 4)
        if len(set(symbols)) < 2:
            continue
        out.append(chart_ops.Chart(f"{piece.piece_id}", tuple(((s, 4),) for s in symbols), 120.0, 4,
                                   f"chords of {piece.piece_id} ({piece.licence})", "as written"))
    return out


def song_piece(song: Song, split: str) -> Piece:
    """Run ``mma`` on the song and return a Piece whose MIDI has explicit roles (seeded by the song)."""
    rng = np.random.default_rng(_seed("arrange", song.chart.chart_id))
    midi_bytes, arrangement = arrange(run_mma(song.mma_text()), song, rng)
    meta = {
        "style_file": song.groove.style_file, "groove": song.groove.name, "family": song.groove.family,
        "intro": song.intro.name if song.intro else None, "end": song.end.name if song.end else None,
        "fill": song.fill.name if song.fill else None,
        "chart_id": song.chart.chart_id, "chart_form": song.chart.form, "chart_key": song.chart.key,
        "chords": [[beat, symbol] for beat, symbol in song.chart.chord_at_beats()],
        "tempo_bpm": song.chart.tempo_bpm, "beats_per_bar": song.chart.beats_per_bar,
        "bars": len(song.chart.bars), "humanise": {"rtime_ticks": song.rtime, "rvolume_percent": song.rvolume},
        "melody": song.melody, "split": split, **arrangement,
    }
    return Piece(f"mma/{song.chart.chart_id}", "mma", MMA_LICENCE, f"{MMA_LIBRARY / song.groove.style_file}",
                 midi_bytes, meta=meta)
