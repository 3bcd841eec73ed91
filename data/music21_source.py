"""Bach chorales from music21's bundled corpus, as multi-track MIDI with an electric-bass part.

The chorales carry harmony the game soundtracks lack: four voices, one of them a real bass line.
Each chorale's Bass part is voiced as a bass guitar (the build then varies programs 32-39), the upper
voices as piano, organ or strings (chosen by a hash of the work, so builds are repeatable). There are
no drums, so chorales give bass pairs only. Parsing is slow (about 0.3 s a work), so the MIDI is
cached in ``cache_dir`` when one is given. Needs the optional ``music21`` extra.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from backline.data.piece import Piece

LICENCE = ("music21 corpus (music21 is BSD-3-Clause); J.S. Bach chorales: public-domain compositions, "
           "encodings distributed with music21 for research and education")
UPPER_PROGRAMS = (0, 19, 48, 52)  # acoustic piano, church organ, string ensemble, choir aahs
MAX_DURATION_SECONDS = 90.0


def chorale_midi(path: str | Path) -> bytes | None:
    """The chorale at ``path`` as MIDI bytes, or None when it has no part named Bass."""
    from music21 import corpus, instrument, midi

    score = corpus.parse(str(path))
    parts = list(score.parts)
    if len(parts) < 2 or not any("bass" in (p.partName or "").lower() for p in parts):
        return None
    upper = UPPER_PROGRAMS[int(hashlib.sha1(Path(path).name.encode()).hexdigest(), 16) % len(UPPER_PROGRAMS)]
    for part in parts:
        for old in part.recurse().getElementsByClass(instrument.Instrument):
            part.remove(old, recurse=True)
        voice = instrument.ElectricBass() if "bass" in (part.partName or "").lower() else instrument.Instrument()
        voice.midiProgram = 33 if isinstance(voice, instrument.ElectricBass) else upper
        part.insert(0, voice)
    return midi.translate.streamToMidiFile(score).writestr()


def pieces(cache_dir: str | Path | None = None, limit: int | None = None) -> Iterator[Piece]:
    from music21 import corpus

    paths = [Path(p) for p in corpus.getComposer("bach") if Path(p).suffix in (".mxl", ".xml", ".krn")]
    for path in sorted(paths)[:limit]:
        cached = Path(cache_dir) / f"{path.stem}.mid" if cache_dir else None
        if cached is not None and cached.is_file():
            data = cached.read_bytes()
        else:
            try:
                data = chorale_midi(path)
            except Exception:  # an unparsable work is left out, like any bad source file
                continue
            if data is None:
                continue
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(data)
        yield Piece(f"music21/bach/{path.stem}", "music21", LICENCE, f"music21 corpus: {path.name}", data,
                    MAX_DURATION_SECONDS)
