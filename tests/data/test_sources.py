import struct

import pytest

from backline.data.sources import SOURCES, wad_music_lumps

from pieces import make_midi


def make_wad(lumps: list[tuple[str, bytes]]) -> bytes:
    body, directory, offset = b"", b"", 12
    for name, data in lumps:
        directory += struct.pack("<ii8s", offset, len(data), name.encode())
        body += data
        offset += len(data)
    return struct.pack("<4sii", b"IWAD", len(lumps), offset) + body + directory


def test_wad_reader_returns_only_midi_music_lumps(tmp_path):
    song = make_midi({1: 33, 9: 0})
    wad = tmp_path / "test.wad"
    wad.write_bytes(make_wad([("D_E1M1", song), ("PLAYPAL", b"\x00" * 30), ("D_MUS", b"MUS\x1a..."), ("D_E1M2", song)]))
    assert [(name, data == song) for name, data in wad_music_lumps(wad)] == [("D_E1M1", True), ("D_E1M2", True)]
    not_wad = tmp_path / "x.wad"
    not_wad.write_bytes(b"JUNK" + b"\x00" * 20)
    with pytest.raises(ValueError, match="not a WAD"):
        list(wad_music_lumps(not_wad))


def test_installed_sources_have_bass_and_drums_and_licences():
    pieces = list(SOURCES["freedoom"].pieces())
    assert len(pieces) >= 60, "the Debian freedoom package should provide about 66 songs"
    assert all(p.midi_bytes[:4] == b"MThd" and "BSD" in p.licence for p in pieces)
    assert len({p.piece_id for p in pieces}) == len(pieces)
    blupi = list(SOURCES["planetblupi"].pieces())
    assert len(blupi) == 10 and all("GPL" in p.licence and p.max_duration_seconds for p in blupi)


def test_music21_chorales_become_bass_pieces(tmp_path):
    pytest.importorskip("music21")
    from backline.data import midi as midi_ops
    from backline.data.music21_source import pieces

    (first, second) = list(pieces(cache_dir=tmp_path, limit=2))
    assert first.piece_id == "music21/bach/bwv1.6" and first.source == "music21" and "Bach" in first.licence
    groups = midi_ops.channel_groups(midi_ops.parse(first.midi_bytes))
    assert "bass" in groups and "drums" not in groups and len(groups) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bwv1.6.mid", "bwv10.7.mid"]
    again = list(pieces(cache_dir=tmp_path, limit=2))  # from the cache, identical
    assert [p.midi_bytes for p in again] == [first.midi_bytes, second.midi_bytes]
