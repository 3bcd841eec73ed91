import json

import mido
import numpy as np
import pytest

from backline.engine.transcribe import Note
from backline.training import eval_suite as es
from eval_synthetic import write_build


def test_onsets_match_one_to_one_within_tolerance():
    assert es.match_onsets([1.0, 2.0, 3.0], [1.04, 1.01, 2.06, 3.0]) == 2
    assert es.match_onsets([1.0, 1.03], [1.02]) == 1
    assert es.match_onsets([], [1.0]) == 0


def test_note_f1_needs_the_exact_pitch():
    reference = [Note(0.0, 0.5, 40), Note(0.5, 1.0, 43)]
    scores = es.note_f1(reference, [Note(0.02, 0.5, 40), Note(0.5, 1.0, 55)])
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5 and scores["f1"] == 0.5
    assert es.note_f1(reference, [Note(0.02, 0.5, 52)], octave_invariant=True)["matched"] == 1


def test_drum_classes_merge_gm_variants():
    reference = [Note(0.0, 0.05, 35), Note(0.0, 0.05, 36), Note(0.5, 0.55, 40), Note(0.5, 0.55, 46)]
    scores = es.drum_f1(reference, [Note(0.01, 0.05, 36), Note(0.52, 0.55, 38)])
    assert scores["kick"]["f1"] == 1.0 and scores["snare"]["f1"] == 1.0
    assert scores["hat"]["recall"] == 0.0 and scores["hat"]["reference"] == 1


def test_reference_notes_follow_the_recorded_transposition_and_tempo(tmp_path):
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000),
                            mido.Message("program_change", channel=1, program=33),
                            mido.Message("program_change", channel=0, program=0)])
    for beat in range(4):
        track += [mido.Message("note_on", channel=1, note=40 + beat, velocity=90, time=0 if beat == 0 else 0),
                  mido.Message("note_on", channel=0, note=60, velocity=90),
                  mido.Message("note_off", channel=1, note=40 + beat, time=480),
                  mido.Message("note_off", channel=0, note=60)]
    midi.tracks.append(track)
    path = tmp_path / "song.mid"
    midi.save(str(path))
    record = {"variant_id": "v", "source": "user", "piece_id": "user/song", "origin": str(path),
              "transpose_semitones": 2, "tempo_scale": 1.25, "programs": {"bass": 34, "drum_kit": None}}
    notes = es.reference_notes(record, "bass")
    assert [n.pitch for n in notes] == [42, 43, 44, 45]
    np.testing.assert_allclose([n.start_seconds for n in notes], [0.0, 0.4, 0.8, 1.2], atol=1e-6)


def test_accompaniment_report_scores_real_one_and_flags_copies(tmp_path):
    build = write_build(tmp_path / "build", count=4, seconds=4.0)
    generated = tmp_path / "generated"
    generated.mkdir()
    import soundfile as sf

    for index in range(4):  # "generated" = the real stem, except one copy of the context
        folder = build / "audio" / f"synthetic_{index}" / "bass"
        source = "context.flac" if index == 0 else "target.flac"
        audio, rate = sf.read(folder / source)
        sf.write(generated / es.generated_name(f"synthetic_{index}", "bass"), audio, rate)
    summary = es.evaluate_accompaniment(build, generated_dir=generated, instruments=("bass",),
                                        figure_dir=tmp_path / "out")
    block = summary["instruments"]["bass"]
    assert block["pairs"] == 4
    assert block["fit"]["real"]["harmonic_fit_normalised"] == 1.0
    assert block["fit"]["shuffled"]["rhythmic_fit_normalised"] == 0.0
    assert block["sanity"]["generated"]["copy_of_context"] == 0.25
    copies = block["context_correlation"]  # one of four is the context itself (correlation 1), three the real stems
    assert copies["real"] < 0.9 and copies["real"] < copies["generated"] <= copies["real"] + 0.25 + 1e-9
    assert block["sanity"]["real"]["any"] == 0.0
    assert set(block["realism"]) == {"rule-based", "generated"}
    (group, row), = block["by_family"].items()  # the synthetic build: one source, no tempo recorded
    assert row["pairs"] == 4 and row["real"]["harmonic_fit"] == 1.0 and row["shuffled"]["rhythmic_fit"] == 0.0
    assert list(block["by_tempo_band"]) == ["unknown tempo"]
    md, js = es.write_report(tmp_path / "out", "report", summary, es.accompaniment_markdown(summary, "test"))
    assert "| generated |" in md.read_text() and f"| {group} | 4 |" in md.read_text()
    for figure in block["figures"]:  # empty without matplotlib
        assert (tmp_path / "out" / figure).stat().st_size > 1000 and f"]({figure})" in md.read_text()
    assert json.loads(js.read_text())["instruments"]["bass"]["pairs"] == 4


def test_autoencoded_real_stems_are_scored_against_the_same_references(tmp_path):
    build = write_build(tmp_path / "build", count=3, seconds=4.0)
    identity = es.evaluate_accompaniment(build, instruments=("bass",), round_trip=lambda audio, rate, instrument: audio)
    fit = identity["instruments"]["bass"]["fit"]
    assert fit["real, autoencoded"] == fit["real"]  # a perfect autoencoder reaches the real stems' fit
    silent = es.evaluate_accompaniment(build, instruments=("bass",), round_trip=lambda audio, rate, instrument: 0 * audio[:-5])
    assert silent["instruments"]["bass"]["sanity"]["real, autoencoded"]["silent"] == 1.0


def test_generate_mode_writes_one_stem_per_pair_with_a_tiny_bundle(tmp_path):
    torch = pytest.importorskip("torch")
    from backline.engine.runtime import TorchBackend
    from backline.engine.pipeline import Bundle
    from backline.models.autoencoder import CONFIGS as AE_CONFIGS, Autoencoder
    from backline.models.diffusion import CONFIGS as DN_CONFIGS, EDMPrecond

    torch.manual_seed(0)
    bundle = Bundle(TorchBackend(Autoencoder(AE_CONFIGS["tiny"]).eval(), EDMPrecond(DN_CONFIGS["tiny"]).eval(),
                                 {"autoencoder": "tiny", "denoiser": "tiny"}))
    build = write_build(tmp_path / "build", count=2, seconds=3.0)
    out = es.generate_stems(build, tmp_path / "gen", bundle, count=2, seconds=1.0, offset_seconds=0.5,
                            instruments=("bass",), steps=2, frame_guidance={"cfg_chords": 3.0})
    index = json.loads((out / es.GENERATED_INDEX).read_text())
    assert index["frame_guidance"] == {"cfg_chords": 3.0}  # the scale each stem was asked for (recorded)
    assert sorted(index["items"]) == ["synthetic_0__bass.wav", "synthetic_1__bass.wav"]
    assert index["items"]["synthetic_0__bass.wav"]["offset_seconds"] == 0.5
    summary = es.evaluate_accompaniment(build, generated_dir=out, instruments=("bass",))
    block = summary["instruments"]["bass"]
    assert block["sanity"]["generated"]["wrong_length"] == 0.0 and block["sanity"]["generated"]["non_finite"] == 0.0
    assert block["seconds"] == pytest.approx(2.0, abs=0.01)


def test_fit_table_intervals_cover_the_score_and_narrow_with_more_pairs():
    rng = np.random.default_rng(1)

    def rows(pairs: int) -> dict:
        def row(mean: float) -> dict:
            return {k: float(mean + rng.normal(0, 0.1)) for k in
                    ("harmonic_fit", "onset_agreement", "grid_agreement", "rhythmic_fit")}
        return {"real": [row(0.5) for _ in range(pairs)], "shuffled": [row(0.3) for _ in range(pairs)],
                "generated": [row(0.4) for _ in range(pairs)]}

    few, many = es.fit_table(rows(6), "bass"), es.fit_table(rows(200), "bass")
    for table in (few, many):
        low, high = table["generated"]["rhythmic_fit_normalised_interval"]
        assert low < table["generated"]["rhythmic_fit_normalised"] < high
        assert table["real"]["harmonic_fit_normalised_interval"] == [1.0, 1.0]
    width = {n: t["generated"]["harmonic_fit_normalised_interval"][1] - t["generated"]["harmonic_fit_normalised_interval"][0]
             for n, t in (("few", few), ("many", many))}
    assert width["many"] < width["few"] / 3
    low, high = many["generated"]["harmonic_fit_normalised_interval"]
    assert low < 0.5 < high  # the true normalised score: (0.4 - 0.3) / (0.5 - 0.3)
    assert np.isnan(es.fit_table(rows(6), "drums")["generated"]["harmonic_fit_normalised_interval"]).all()


def test_an_mma_songs_tempo_and_chords_are_sent_as_a_host_and_a_producer_would():
    from backline.models.conditioning import parse_chords
    from backline.training.eval_suite import song_timing

    record = {"variant_id": "v", "mma": {"tempo_bpm": 96.0, "beats_per_bar": 3,
                                         "chords": [[0.0, "Am"], [3.0, "F"], [6.0, "G7"], [7.5, "C"]]}}
    fields = song_timing(record, 5.0, ("tempo", "chords"))
    assert fields["tempo"].bpm == 96.0 and fields["tempo"].beats_per_bar == 3
    assert fields["tempo"].region_start_beats == pytest.approx(8.0)  # 5 s at 96 BPM
    assert parse_chords(fields["chords"], 3) == [(0.0, "Am"), (3.0, "F"), (6.0, "G7"), (7.5, "C")]
    assert set(song_timing(record, 0.0, ("tempo",))) == {"tempo"}
    assert song_timing({"variant_id": "w", "source": "freedoom"}, 0.0, ("tempo", "chords")) == {}
    with pytest.raises(ValueError, match="only the tempo and the chords"):
        song_timing(record, 0.0, ("key",))


def test_generated_pairs_are_spread_over_the_style_families():
    records = [{"variant_id": f"{family}{i}", "mma": {"family": family}} for family in ("rock", "latin", "waltz")
               for i in range(5)] + [{"variant_id": "other", "source": "freedoom"}]
    picked = es.spread(records, 7, seed=0)
    families = [es._family(r) for r in picked]
    assert len(picked) == 7 and len({r["variant_id"] for r in picked}) == 7
    assert set(families) == {"rock", "latin", "waltz", "freedoom"} and max(families.count(f) for f in families) == 2
    assert es.spread(records, 7, seed=0) == picked and len(es.spread(records, 99, seed=1)) == len(records)


def test_the_spectrograms_beat_grid_is_the_songs_within_the_segment():
    from backline.training.eval_suite import beat_grid_seconds

    record = {"mma": {"tempo_bpm": 120.0, "beats_per_bar": 4, "chords": [[0, "C"]]}}
    beats, bars = beat_grid_seconds(record, offset_seconds=1.25, seconds=3.0)
    np.testing.assert_allclose(beats, [0.25, 0.75, 1.25, 1.75, 2.25, 2.75])  # song beats 3..8, from 1.5 s
    np.testing.assert_allclose(bars, [0.75, 2.75])  # beats 4 and 8 start bars
    assert beat_grid_seconds({"source": "freedoom"}, 0.0, 3.0) is None  # no timing recorded: no grid


def test_paired_difference_reads_two_reports_of_the_same_pairs():
    rng = np.random.default_rng(0)

    def report(offset, ids):
        pairs = [{"variant_id": v,
                  "real": {"harmonic_fit": 0.8, "onset_agreement": 0.6, "grid_agreement": 0.6, "rhythmic_fit": 0.6},
                  "shuffled": {"harmonic_fit": 0.4, "onset_agreement": 0.2, "grid_agreement": 0.2, "rhythmic_fit": 0.2},
                  "generated": {k: base + offset for k, base in zip(
                      ("harmonic_fit", "onset_agreement", "grid_agreement", "rhythmic_fit"), rng.uniform(0.3, 0.9, 4))}}
                 for v in ids]
        return {"instruments": {"bass": {"per_pair": pairs, "realism": {"generated": {"frechet": 10.0 + offset}}}}}

    ids = [f"v{i}" for i in range(8)]
    rng = np.random.default_rng(0)
    baseline = report(0.0, ids)
    rng = np.random.default_rng(0)  # the same stems, each fit 0.04 higher: +0.1 of the 0.4 real-shuffled spread
    candidate = report(0.04, ids)
    out = es.paired_difference(candidate, baseline, "bass")
    for key in ("harmonic_fit", "rhythmic_fit"):
        assert abs(out[key]["difference"] - 0.1) < 1e-9 and out[key]["pairs"] == 8
        assert out[key]["interval"][0] <= 0.1 + 1e-9 <= out[key]["interval"][1] + 2e-9
    assert out["frechet"] == {"candidate": 10.04, "baseline": 10.0}
    with pytest.raises(ValueError, match="different pairs"):
        es.paired_difference(report(0.0, ids[::-1]), baseline, "bass")


def test_eval_compare_prints_and_writes_the_paired_figures(tmp_path, capsys):
    from backline.cli import main

    pairs = [{"variant_id": f"v{i}", **{name: {k: value + 0.01 * i for k in ("harmonic_fit", "onset_agreement",
                                                                             "grid_agreement", "rhythmic_fit")}
                                        for name, value in (("real", 0.8), ("shuffled", 0.4), ("generated", 0.7))}}
             for i in range(4)]
    for name, shift in (("a", 0.0), ("b", 0.04)):
        rows = [{**p, "generated": {k: v - shift for k, v in p["generated"].items()}} for p in pairs]
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(
            {"instruments": {"bass": {"per_pair": rows, "realism": {"generated": {"frechet": 5.0}}}}}))
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "c.json")]) == 0
    assert "harmonic_fit     +0.100" in capsys.readouterr().out
    assert abs(json.loads((tmp_path / "c.json").read_text())["bass"]["rhythmic_fit"]["difference"] - 0.1) < 1e-9
