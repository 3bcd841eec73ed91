"""Small hand-made MIDI pieces, written in code, for data-engine tests that run in seconds."""

from __future__ import annotations

import mido

from backline.data.midi import to_bytes
from backline.data.piece import Piece

SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"


def make_midi(parts: dict[int, int], *, bars: int = 2, tempo_bpm: float = 120.0, root_note: int = 40) -> bytes:
    """A type-1 MIDI file: one track per channel in ``parts`` ({channel: program}), quarter notes.

    Channel 9 plays a kick/snare/hat groove; other channels play a short riff from ``root_note``.
    """
    midi = mido.MidiFile(type=1, ticks_per_beat=96)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0)])
    midi.tracks.append(meta)
    for channel, program in parts.items():
        track = mido.MidiTrack([mido.Message("program_change", channel=channel, program=program, time=0)])
        for beat in range(4 * bars):
            if channel == 9:
                note = (36, 42, 38, 42)[beat % 4]
            else:
                note = root_note + (0, 7, 12, 7)[beat % 4] + (12 if program < 32 else 0) + 12 * (channel % 2)
            track.append(mido.Message("note_on", channel=channel, note=note, velocity=100, time=0))
            track.append(mido.Message("note_off", channel=channel, note=note, velocity=0, time=90))
            track.append(mido.Message("note_on", channel=channel, note=note, velocity=0, time=6))
        midi.tracks.append(track)
    return to_bytes(midi)


def band_piece(piece_id: str, **kwargs) -> Piece:
    """Bass (program 33), drums, piano and strings."""
    return Piece(piece_id, "test", "CC0 (generated in the test)", piece_id,
                 make_midi({0: 0, 1: 33, 2: 48, 9: 0}, **kwargs))

