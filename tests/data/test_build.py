import json
from dataclasses import replace

import mido
import numpy as np
import pytest

from backline.data import midi as midi_ops
from backline.data.build import BuildConfig, build, plan, split_of
from backline.data.dataset import iter_pairs, read_manifest
from backline.data.piece import Piece
from backline.data.sources import ReservedError
from backline.data.synth import Effects, Synth
from backline.engine.audio import read_audio

from pieces import SOUNDFONT, band_piece, make_midi

CONFIG = BuildConfig(sources=(), soundfonts=(SOUNDFONT,), variants_per_soundfont=2, seed=7)


def load(build_dir, rel):
    return read_audio(build_dir / rel)[0][0]


def test_pairs_are_aligned_and_sum_to_the_mix(tmp_path, band):
    report = build(CONFIG, tmp_path, pieces=band[:2], jobs=1)
    assert report.built == 4 and not report.skipped
    records = read_manifest(tmp_path)
    assert len(records) == 4
    for record in records:
        stems = {name: load(tmp_path, rel) for name, rel in record["stems"].items()}
        assert set(stems) == {"bass", "drums", "keys", "orchestra"}
        lengths = {len(s) for s in stems.values()}
        assert lengths == {record["frames"]}
        assert record["duration_seconds"] == pytest.approx(record["frames"] / 44100, abs=1e-4)
        mix = load(tmp_path, record["mix"])
        np.testing.assert_allclose(mix, np.sum(list(stems.values()), axis=0), atol=2e-6 * len(stems))
        assert set(record["pairs"]) == {"bass", "drums"}
        for target, pair in record["pairs"].items():
            assert target not in pair["context_stems"] and 1 <= len(pair["context_stems"]) <= 3
            context = load(tmp_path, pair["context"])
            np.testing.assert_allclose(context, np.sum([stems[s] for s in pair["context_stems"]], axis=0), atol=1e-5)
            np.testing.assert_array_equal(load(tmp_path, pair["target"]), stems[target])
            assert pair["target"] == record["stems"][target]  # the stem file itself, no copy on disk
    assert not list(tmp_path.glob("audio/*/*/target.flac"))
    pairs = list(iter_pairs(tmp_path, "bass"))
    assert len(pairs) == 4 and all(p.context.shape == p.target.shape for p in pairs)


def test_stems_sum_to_a_full_render_within_rendering_tolerance(tmp_path, band):
    config = replace(CONFIG, variants_per_soundfont=1, stem_gain_db=(0.0, 0.0))
    build(config, tmp_path, pieces=band[:1], jobs=1)
    record = read_manifest(tmp_path)[0]
    mix = load(tmp_path, record["mix"])
    aug = midi_ops.Augmentation(record["transpose_semitones"], record["tempo_scale"],
                                record["programs"]["bass"], record["programs"]["drum_kit"])
    midi = midi_ops.parse(band[0].midi_bytes)
    augmented = midi_ops.augment(midi, aug, midi_ops.channel_groups(midi))
    with Synth(SOUNDFONT, 44100, Effects(**record["effects"])) as synth:
        full = synth.render(midi_ops.to_bytes(augmented), augmented.length)
    full *= 10 ** (record["level_db"] / 20)
    snr_db = 10 * np.log10(np.sum(full**2) / np.sum((full - mix) ** 2))
    assert snr_db > 25, snr_db


def test_build_is_deterministic_for_a_seed(tmp_path, band):
    build(CONFIG, tmp_path / "a", pieces=band[:1], jobs=2)
    build(CONFIG, tmp_path / "b", pieces=band[:1], jobs=1)
    build(replace(CONFIG, seed=8), tmp_path / "c", pieces=band[:1], jobs=1)
    a, b, c = (read_manifest(tmp_path / x) for x in "abc")
    assert a == b
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(load(tmp_path / "a", ra["mix"]), load(tmp_path / "b", rb["mix"]))
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seed",)}
    assert [strip(r) for r in a] != [strip(r) for r in c]  # another seed draws other augmentations


def test_variants_differ_and_augmentations_stay_in_range(tmp_path, band):
    build(replace(CONFIG, variants_per_soundfont=4), tmp_path, pieces=band[:1], jobs=2)
    records = read_manifest(tmp_path)
    assert len({(r["transpose_semitones"], r["tempo_scale"]) for r in records}) == 4
    for r in records:
        assert -5 <= r["transpose_semitones"] <= 6 and 0.85 <= r["tempo_scale"] <= 1.15
        assert 32 <= r["programs"]["bass"] <= 39 and r["programs"]["drum_kit"] in midi_ops.DRUM_KITS
        assert r["licence"] and r["source"] == "test" and r["soundfont"] == "FluidR3_GM.sf2"


def test_no_piece_in_two_splits(tmp_path):
    pieces = [band_piece(f"test/p{i}", bars=1) for i in range(12)]
    build(CONFIG, tmp_path, pieces=pieces, jobs=2)
    splits = {}
    for record in read_manifest(tmp_path):
        splits.setdefault(record["piece_id"], set()).add(record["split"])
        assert record["split"] == split_of(record["piece_id"])
    assert all(len(s) == 1 for s in splits.values()) and len(splits) == 12
    shares = [split_of(f"piece-{i}") for i in range(2000)]
    assert 0.75 < shares.count("train") / 2000 < 0.85
    assert {"validation", "test"} <= set(shares)


def test_reserved_sources_and_soundfonts_are_refused(tmp_path, band):
    with pytest.raises(ReservedError, match="reserved for independent evaluation"):
        plan(replace(CONFIG, soundfonts=("/usr/share/sounds/sf2/TimGM6mb.sf2",)), band)
    openmsx = Piece("x", "openttd", "GPL", "/usr/share/games/openttd/baseset/openmsx/theme.mid", band[0].midi_bytes)
    with pytest.raises(ReservedError):
        plan(CONFIG, [openmsx])
    with pytest.raises(ReservedError):
        plan(replace(CONFIG, sources=("openttd-openmsx",)))


def test_bad_pieces_are_skipped_with_reasons(tmp_path, band):
    corrupt = Piece("test/corrupt", "test", "CC0", "corrupt", b"MThd\x00\x00\x00\x06garbage")
    piano_only = Piece("test/piano", "test", "CC0", "piano", make_midi({0: 0}))
    bass_only = Piece("test/solo", "test", "CC0", "solo", make_midi({1: 34}))
    report = build(replace(CONFIG, variants_per_soundfont=1), tmp_path,
                   pieces=[corrupt, band[0], piano_only, bass_only], jobs=1)
    reasons = {s["variant_id"].split("__")[0]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"test_corrupt", "test_piano", "test_solo"}
    assert "corrupt MIDI" in reasons["test_corrupt"]
    assert "no bass or drum part" in reasons["test_piano"]
    assert "no context" in reasons["test_solo"]
    assert [r["piece_id"] for r in read_manifest(tmp_path)] == ["test/song0"]
    report_json = json.loads((tmp_path / "report.json").read_text())
    assert len(report_json["skipped"]) == 3
    assert not (tmp_path / "audio" / "test_corrupt__FluidR3_GM__v0").exists()


def test_interrupted_build_resumes(tmp_path, band):
    first = build(replace(CONFIG, variants_per_soundfont=1), tmp_path, pieces=band[:1], jobs=1)
    second = build(replace(CONFIG, variants_per_soundfont=1), tmp_path, pieces=band[:2], jobs=1)
    assert (first.built, second.built, second.reused) == (1, 1, 1)
    assert len(read_manifest(tmp_path)) == 2


def test_trimming_caps_duration_and_tempo_scaling_changes_it():
    midi = midi_ops.parse(make_midi({1: 33, 9: 0}, bars=8, tempo_bpm=120))  # 16 s
    groups = midi_ops.channel_groups(midi)
    assert groups == {"bass": [1], "drums": [9]}
    assert midi.length == pytest.approx(16.0, abs=0.01)
    faster = midi_ops.augment(midi, midi_ops.Augmentation(tempo_scale=1.25), groups)
    assert faster.length == pytest.approx(16.0 / 1.25, abs=0.01)
    trimmed = midi_ops.augment(midi, midi_ops.Augmentation(tempo_scale=0.9, max_duration_seconds=5.0), groups)
    assert trimmed.length == pytest.approx(5.0, abs=0.02)
    notes = [m for t in trimmed.tracks for m in t if m.type == "note_on" and m.velocity > 0]
    assert 0 < len(notes) < 32


def test_transposition_spares_drums_and_programs_are_replaced():
    midi = midi_ops.parse(make_midi({1: 33, 9: 0}, bars=1))
    groups = midi_ops.channel_groups(midi)
    out = midi_ops.augment(midi, midi_ops.Augmentation(transpose_semitones=3, bass_program=38, drum_kit=16), groups)
    def notes(m, channel):
        return [x.note for t in m.tracks for x in t if x.type == "note_on" and x.channel == channel and x.velocity]
    assert notes(out, 1) == [n + 3 for n in notes(midi, 1)]
    assert notes(out, 9) == notes(midi, 9)
    programs = {(x.channel, x.program) for t in out.tracks for x in t if x.type == "program_change"}
    assert programs == {(1, 38), (9, 16)}
