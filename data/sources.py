"""Where the MIDI comes from, and under which licence: every source we may train on is listed here.

A source yields ``Piece`` objects (an id, raw MIDI bytes, provenance). Sources reserved for
independent evaluation are named in ``RESERVED`` and refused by the builder. Adding a source means
adding a function here with its licence and why the licence allows training and redistribution of
derived audio.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from backline.data.piece import Piece


@dataclass(frozen=True)
class Source:
    name: str
    licence: str
    provenance: str
    pieces: Callable[[], Iterator[Piece]]


FREEDOOM_WADS = (Path("/usr/share/games/doom/freedoom1.wad"), Path("/usr/share/games/doom/freedoom2.wad"))
PLANETBLUPI_DIR = Path("/usr/share/planetblupi/music")

FREEDOOM_LICENCE = "BSD-3-Clause (Freedoom licence, Debian package freedoom)"
PLANETBLUPI_LICENCE = "GPL-3+ (Debian package planetblupi-music-midi)"

# Never used for training or tuning: kept for independent evaluation (the shared field notes).
RESERVED = {
    "sources": ("openttd-openmsx", "/usr/share/games/openttd/baseset/openmsx"),
    "soundfonts": ("TimGM6mb", "sf_GMbank"),
}


class ReservedError(ValueError):
    """A source or soundfont reserved for independent evaluation was asked for in a training build."""


def check_not_reserved(path_or_name: str | Path) -> None:
    """Raise ``ReservedError`` if ``path_or_name`` names a reserved source or soundfont."""
    text = str(path_or_name).lower()
    for name in RESERVED["sources"] + RESERVED["soundfonts"]:
        if name.lower() in text:
            raise ReservedError(
                f"{path_or_name}: reserved for independent evaluation ({name}); never train or tune on it"
            )


def wad_music_lumps(wad_path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(lump_name, midi_bytes)`` for the MIDI music lumps (``D_*``) of a Doom WAD file.

    A WAD is a 12-byte header ("IWAD"/"PWAD", lump count, directory offset) followed elsewhere by
    16-byte directory entries (offset, size, 8-character name).
    """
    data = Path(wad_path).read_bytes()
    ident, count, directory = struct.unpack_from("<4sii", data, 0)
    if ident not in (b"IWAD", b"PWAD"):
        raise ValueError(f"{wad_path}: not a WAD file")
    for index in range(count):
        offset, size, raw_name = struct.unpack_from("<ii8s", data, directory + 16 * index)
        name = raw_name.rstrip(b"\0").decode("ascii", "replace")
        lump = data[offset : offset + size]
        if name.startswith("D_") and lump[:4] == b"MThd":
            yield name, lump


def freedoom_pieces() -> Iterator[Piece]:
    seen: set[bytes] = set()
    for wad in FREEDOOM_WADS:
        if not wad.is_file():
            continue
        for name, midi in wad_music_lumps(wad):
            if midi in seen:  # the two WADs share some tracks
                continue
            seen.add(midi)
            yield Piece(f"freedoom/{wad.stem}/{name}", "freedoom", FREEDOOM_LICENCE, f"{wad}:{name}", midi, 150.0)


def planetblupi_pieces() -> Iterator[Piece]:
    for path in sorted(PLANETBLUPI_DIR.glob("*.mid")):
        yield Piece(f"planetblupi/{path.stem}", "planetblupi", PLANETBLUPI_LICENCE, str(path), path.read_bytes(), 120.0)


def midi_folder_pieces(folder: str | Path, licence: str) -> Iterator[Piece]:
    """MIDI files a user owns (``--midi-dir``); the licence is theirs to state."""
    folder = Path(folder)
    check_not_reserved(folder)
    for path in sorted(folder.rglob("*.mid")) + sorted(folder.rglob("*.midi")):
        yield Piece(f"user/{path.relative_to(folder).with_suffix('')}", "user", licence, str(path), path.read_bytes())


SOURCES: dict[str, Source] = {
    "freedoom": Source(
        "freedoom",
        FREEDOOM_LICENCE,
        "Freedoom 0.12 soundtrack: MIDI lumps D_* read out of freedoom1.wad and freedoom2.wad; "
        "human-written, BSD licence allows redistribution and derived works.",
        freedoom_pieces,
    ),
    "planetblupi": Source(
        "planetblupi",
        PLANETBLUPI_LICENCE,
        "Planet Blupi's game music, /usr/share/planetblupi/music/*.mid; GPL-3+ allows derived works "
        "(the rendered audio stays GPL-3+ if redistributed). Long loops trimmed to 120 s.",
        planetblupi_pieces,
    ),
}


def _music21_pieces() -> Iterator[Piece]:
    import os

    from backline.data import music21_source

    cache = os.environ.get("BACKLINE_DATA")
    return music21_source.pieces(cache_dir=Path(cache) / "cache" / "music21" if cache else None)


try:  # optional: the music21 extra
    import music21  # noqa: F401
except ImportError:
    pass
else:
    SOURCES["music21"] = Source(
        "music21",
        "music21 corpus: Bach chorales (public-domain compositions)",
        "J.S. Bach chorales from music21's bundled corpus with a part named Bass (no drums: bass pairs "
        "only); the Bass part voiced as bass guitar, upper voices piano/organ/strings/choir; trimmed to 90 s.",
        _music21_pieces,
    )

