"""A piece of music a source yields: an id, raw multi-track MIDI, and where it came from under which licence."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Piece:
    piece_id: str
    source: str
    licence: str
    origin: str  # file (and lump) the MIDI was read from
    midi_bytes: bytes
    max_duration_seconds: float | None = None  # trim long loops
    meta: dict | None = field(default=None, compare=False)  # source-specific provenance for the manifest
