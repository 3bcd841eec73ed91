"""MIDI surgery for the data engine: instrument groups, augmentation, trimming, stem extraction.

Stems are grouped by General MIDI program family, as Slakh2100 groups by instrument class. Drums are
channel 10 (index 9). Every function here is pure: MIDI bytes or a ``mido.MidiFile`` in, new ones out.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import mido

DRUM_CHANNEL = 9
DEFAULT_TEMPO_US = 500_000  # 120 BPM, MIDI's default
BASS_PROGRAMS = range(32, 40)
# GM drum kits present in the GM soundfonts we use (bank 128 presets).
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40, 48)

# Stem groups by GM program, in the fixed order stems are rendered and listed.
STEM_GROUPS = ("bass", "drums", "keys", "guitar", "orchestra", "synth")


def program_group(program: int) -> str:
    if 32 <= program <= 39:
        return "bass"
    if program <= 23:
        return "keys"  # piano, chromatic percussion, organ
    if program <= 31:
        return "guitar"
    if program <= 79:
        return "orchestra"  # strings, ensemble, brass, reed, pipe
    return "synth"  # synth lead, pad, effects, ethnic, percussive, sound effects


class MidiError(ValueError):
    """A MIDI file that cannot be used; the message says why."""


def parse(midi_bytes: bytes) -> mido.MidiFile:
    try:
        midi = mido.MidiFile(file=io.BytesIO(midi_bytes))
    except Exception as error:
        raise MidiError(f"corrupt MIDI ({type(error).__name__}: {error})") from error
    if midi.type == 2:
        raise MidiError("MIDI type 2 (independent sequences) is not supported")
    if midi.ticks_per_beat <= 0:
        raise MidiError("MIDI has no valid time division")
    return midi


def to_bytes(midi: mido.MidiFile) -> bytes:
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def _absolute(track: mido.MidiTrack) -> list[tuple[int, mido.Message]]:
    tick, events = 0, []
    for message in track:
        tick += message.time
        events.append((tick, message))
    return events


def track_from_events(events: list[tuple[int, mido.Message]]) -> mido.MidiTrack:
    """A track from (absolute tick, message) pairs, in tick order (stable within a tick)."""
    track, previous = mido.MidiTrack(), 0
    for tick, message in sorted(events, key=lambda e: e[0]):  # stable: keeps order within a tick
        track.append(message.copy(time=tick - previous))
        previous = tick
    return track


def channel_groups(midi: mido.MidiFile) -> dict[str, list[int]]:
    """Map each stem group to the channels that play notes in it (a channel's most used program)."""
    programs: dict[int, int] = {}
    counts: dict[int, dict[int, int]] = {}
    for track in midi.tracks:
        for _, message in _absolute(track):
            if message.type == "program_change":
                programs[message.channel] = message.program
            elif message.type == "note_on" and message.velocity > 0:
                per_channel = counts.setdefault(message.channel, {})
                program = programs.get(message.channel, 0)
                per_channel[program] = per_channel.get(program, 0) + 1
    groups: dict[str, list[int]] = {}
    for channel, per_program in sorted(counts.items()):
        group = "drums" if channel == DRUM_CHANNEL else program_group(max(per_program, key=per_program.get))
        groups.setdefault(group, []).append(channel)
    return {g: groups[g] for g in STEM_GROUPS if g in groups}


def note_spans(midi: mido.MidiFile) -> list[tuple[int, int, int, int, int]]:
    """Every note as ``(start_tick, end_tick, note, velocity, channel)``, sorted by start."""
    spans, sounding = [], {}
    for track in midi.tracks:
        for tick, message in _absolute(track):
            if message.type == "note_on" and message.velocity > 0:
                sounding.setdefault((message.channel, message.note), []).append((tick, message.velocity))
            elif message.type in ("note_off", "note_on"):
                started = sounding.get((message.channel, message.note))
                if started:
                    start, velocity = started.pop(0)
                    spans.append((start, tick, message.note, velocity, message.channel))
    return sorted(spans)


def _tempo_events(midi: mido.MidiFile) -> list[tuple[int, int]]:
    events = [(t, m.tempo) for track in midi.tracks for t, m in _absolute(track) if m.type == "set_tempo"]
    events.sort(key=lambda e: e[0])
    if not events or events[0][0] > 0:
        events.insert(0, (0, DEFAULT_TEMPO_US))
    return events


def tick_at_seconds(midi: mido.MidiFile, seconds: float) -> int:
    """The first tick at or after ``seconds`` of playback, following the tempo map."""
    tempos = _tempo_events(midi) + [(10**12, 0)]
    elapsed = 0.0
    for (tick, tempo), (next_tick, _) in zip(tempos, tempos[1:]):
        seconds_per_tick = tempo / 1e6 / midi.ticks_per_beat
        span = (next_tick - tick) * seconds_per_tick
        if elapsed + span >= seconds:
            return tick + int((seconds - elapsed) / seconds_per_tick + 0.999999)
        elapsed += span
    raise AssertionError("unreachable: the last tempo span is unbounded")


@dataclass(frozen=True)
class Augmentation:
    """How one variant of a piece differs from the written piece."""

    transpose_semitones: int = 0
    tempo_scale: float = 1.0  # > 1 plays faster
    bass_program: int | None = None  # 32..39, replaces the bass channels' programs
    drum_kit: int | None = None  # GM kit number on channel 10
    max_duration_seconds: float | None = None


def augment(midi: mido.MidiFile, aug: Augmentation, groups: dict[str, list[int]]) -> mido.MidiFile:
    """Return a new MIDI file with ``aug`` applied (transposition spares the drum channel)."""
    bass_channels = set(groups.get("bass", ()))
    cut_tick = None
    if aug.max_duration_seconds is not None:
        # The output's first max_duration_seconds are the written piece's first (max * tempo_scale) seconds.
        cut_tick = tick_at_seconds(midi, aug.max_duration_seconds * aug.tempo_scale)
    out = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat)
    has_tempo_at_zero = any(t == 0 for t, _ in _tempo_events_raw(midi))
    for index, track in enumerate(midi.tracks):
        events: list[tuple[int, mido.Message]] = []
        if index == 0:
            if not has_tempo_at_zero:
                events.append((0, mido.MetaMessage("set_tempo", tempo=_scaled(DEFAULT_TEMPO_US, aug.tempo_scale))))
            if aug.bass_program is not None:
                for channel in sorted(bass_channels):
                    events.append((0, mido.Message("program_change", channel=channel, program=aug.bass_program)))
            if aug.drum_kit is not None and "drums" in groups:
                events.append((0, mido.Message("program_change", channel=DRUM_CHANNEL, program=aug.drum_kit)))
            if cut_tick is not None:
                events.extend(_all_notes_off(cut_tick))
        for tick, message in _absolute(track):
            if cut_tick is not None and tick >= cut_tick:
                if message.type != "end_of_track":
                    continue  # the all-notes-off at cut_tick ends what was sounding
                tick = cut_tick
            if message.type == "set_tempo":
                message = message.copy(tempo=_scaled(message.tempo, aug.tempo_scale))
            elif message.type == "program_change":
                if message.channel in bass_channels and aug.bass_program is not None:
                    message = message.copy(program=aug.bass_program)
                elif message.channel == DRUM_CHANNEL and aug.drum_kit is not None:
                    message = message.copy(program=aug.drum_kit)
            elif message.type in ("note_on", "note_off", "polytouch") and message.channel != DRUM_CHANNEL:
                note = message.note + aug.transpose_semitones
                if not 0 <= note <= 127:
                    continue
                message = message.copy(note=note)
            events.append((tick, message))
        out.tracks.append(track_from_events(events))
    return out


def _tempo_events_raw(midi: mido.MidiFile) -> list[tuple[int, int]]:
    return [(t, m.tempo) for track in midi.tracks for t, m in _absolute(track) if m.type == "set_tempo"]


def _scaled(tempo_us: int, tempo_scale: float) -> int:
    return max(1, min(0xFFFFFF, round(tempo_us / tempo_scale)))


def _all_notes_off(tick: int) -> list[tuple[int, mido.Message]]:
    return [(tick, mido.Message("control_change", channel=c, control=123, value=0)) for c in range(16)]


def extract_channels(midi: mido.MidiFile, channels: set[int] | list[int]) -> mido.MidiFile:
    """Keep meta and system messages and the channel messages of ``channels`` only."""
    keep = set(channels)
    out = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat)
    for track in midi.tracks:
        events = [(t, m) for t, m in _absolute(track) if not hasattr(m, "channel") or m.channel in keep]
        out.tracks.append(track_from_events(events))
    return out
