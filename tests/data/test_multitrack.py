import numpy as np
import pytest
import soundfile as sf

from backline.data.dataset import iter_pairs, read_manifest
from backline.data.multitrack import import_musdb, import_slakh
from backline.engine.audio import read_audio


def tone(frequency_hz, seconds=1.0, sample_rate=48000, channels=2):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    mono = 0.2 * np.sin(2 * np.pi * frequency_hz * t)
    return np.stack([mono] * channels, axis=1), sample_rate


def test_musdb_folders_become_pairs_whose_context_is_the_rest(tmp_path):
    for split in ("train", "test"):
        track = tmp_path / "musdb" / split / f"Artist - Song {split}"
        track.mkdir(parents=True)
        for name, freq in (("bass", 55), ("drums", 200), ("other", 440), ("vocals", 880), ("mixture", 100)):
            sf.write(track / f"{name}.wav", *tone(freq))
    broken = tmp_path / "musdb" / "train" / "Broken"
    broken.mkdir()
    (broken / "bass.wav").write_bytes(b"RIFF0000WAVEjunk")
    report = import_musdb(tmp_path / "musdb", tmp_path / "out")
    assert report["imported"] == 2
    assert len(report["skipped"]) == 1 and "not an audio file Backline can read" in report["skipped"][0]["reason"]
    records = read_manifest(tmp_path / "out")
    assert sorted(r["split"] for r in records) == ["test", "train"]
    for record in records:
        assert record["sample_rate"] == 44100 and record["frames"] == 44100
        mix = read_audio(tmp_path / "out" / record["mix"])[0][0]
        for pair in iter_pairs(tmp_path / "out", "bass"):
            np.testing.assert_allclose(pair.context + pair.target, mix, atol=1e-4)
    assert read_manifest(tmp_path / "out", split="train")[0]["pairs"]["drums"]["context_stems"] == ["bass", "other", "vocals"]


def test_slakh_folders_group_stems_by_class(tmp_path):
    track = tmp_path / "slakh" / "validation" / "Track00001"
    (track / "stems").mkdir(parents=True)
    (track / "metadata.yaml").write_text(
        "UUID: abc\nstems:\n"
        "  S00: {inst_class: Bass, is_drum: false, program_num: 33, audio_rendered: true}\n"
        "  S01: {inst_class: Drums, is_drum: true, program_num: 0, audio_rendered: true}\n"
        "  S02: {inst_class: Piano, is_drum: false, program_num: 0, audio_rendered: true}\n"
        "  S03: {inst_class: Piano, is_drum: false, program_num: 1, audio_rendered: true}\n"
        "  S04: {inst_class: Guitar, is_drum: false, program_num: 25, audio_rendered: false}\n"
    )
    for stem, freq in (("S00", 55), ("S01", 300), ("S02", 440), ("S03", 660)):
        sf.write(track / "stems" / f"{stem}.flac", *tone(freq, sample_rate=44100, channels=1))
    report = import_slakh(tmp_path / "slakh", tmp_path / "out")
    assert report == {"imported": 1, "skipped": []}
    (record,) = read_manifest(tmp_path / "out")
    assert record["split"] == "validation"
    assert sorted(record["stems"]) == ["bass", "drums", "piano"]
    piano = read_audio(tmp_path / "out" / record["stems"]["piano"])[0][0]
    expected = tone(440, sample_rate=44100, channels=1)[0][:, 0] + tone(660, sample_rate=44100, channels=1)[0][:, 0]
    np.testing.assert_allclose(piano, expected, atol=1e-4)
