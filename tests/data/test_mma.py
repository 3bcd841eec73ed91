"""The MMA source, the drum kits and the broad recipe: the real ``mma``, real soundfonts and kits."""


import mido
import numpy as np
import pytest

from backline.data import build as build_ops
from backline.data import charts as chart_ops
from backline.data import kits as kit_ops
from backline.data import mma
from backline.data.build import BuildConfig, HeldOut, Variant, render_variant
from backline.data.dataset import stem_program
from backline.data.sources import ReservedError
from backline.engine.audio import read_audio

FLUID = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
HYDROGEN_KIT = str(kit_ops.HYDROGEN_KITS / "Millo_MultiLayered2")
AVL_KIT = "/usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2"
ROCK = mma.Groove("Rock1", "stdlib/basicrock.mma", "rock", 4, ("BASS", "CHORD", "DRUM-KICK"), "main", 4, "")


def tiny_song(groove=ROCK, *, melody=True, bars=4) -> mma.Song:
    chart = chart_ops.Chart("test/chart", tuple(((s, 4),) for s in ("Am7", "F", "C/E", "G7")[:bars]), 120.0, 4,
                            "test", "A minor")
    return mma.Song(chart, groove, None, None, None, rtime=5, rvolume=10, melody=melody)


def test_chord_symbols_read_as_mma_plays_them():
    assert chart_ops.chord_pitch_classes("Am7") == (9, (0, 4, 7, 9), 9)
    assert chart_ops.chord_pitch_classes("G7/B") == (7, (2, 5, 7, 11), 11)
    assert chart_ops.chord_pitch_classes("Bbm7b5")[1] == (1, 4, 8, 10)
    with pytest.raises(chart_ops.ChartError, match="unknown chord quality"):
        chart_ops.chord_pitch_classes("Cblah")


def test_generated_charts_cover_keys_forms_and_fill_their_bars():
    charts = [chart_ops.generate_chart(f"c{i}", np.random.default_rng(i), beats_per_bar=b, tempo_bpm=100)
              for i, b in enumerate([4, 3] * 60)]
    assert {c.key.split()[0] for c in charts} == set(chart_ops.NOTE_NAMES)
    assert len({c.form for c in charts}) >= 12
    for chart in charts:
        assert 8 <= len(chart.bars) <= 32
        assert all(sum(beats for _, beats in bar) == chart.beats_per_bar for bar in chart.bars)
        for bar in chart.bars:
            for symbol, _ in bar:
                chart_ops.chord_pitch_classes(symbol)


def test_chords_are_read_back_out_of_notes():
    notes = []
    for bar, (root, third) in enumerate([(57, 60), (53, 57), (48, 52), (55, 59)]):  # Am F C G
        for pitch in (root, third, root + 7):
            notes.append((bar * 4.0, bar * 4.0 + 4, pitch, 90))
    assert chart_ops.chords_from_notes(notes, 16.0, 4) == ["Am", "F", "C", "G"]


def test_real_mma_writes_roles_and_a_melody_in_the_charts_harmony():
    song = tiny_song()
    text = song.mma_text()
    assert "Groove Rock1" in text and "AllTracks RTime 5" in text and "1 Am7 / / /" in text
    midi_bytes, arrangement = mma.arrange(mma.run_mma(text), song, np.random.default_rng(0))
    midi = mido.MidiFile(file=__import__("io").BytesIO(midi_bytes))
    roles = {int(c): r for c, r in arrangement["roles"].items()}
    assert roles[9] == "drums" and "bass" in roles.values() and list(roles.values()).count("melody") == 1
    programs = {int(c): p for c, p in arrangement["programs"].items()}
    assert all(32 <= programs[c] <= 39 for c, r in roles.items() if r == "bass")
    assert all(not 32 <= programs[c] <= 39 for c, r in roles.items() if r in ("context", "melody"))
    melody_channel = next(c for c, r in roles.items() if r == "melody")
    melody_notes = [(t, m.note) for t, m in _timed(midi) if m.type == "note_on" and m.velocity > 0 and m.channel == melody_channel]
    in_chord = [n % 12 in chart_ops.chord_pitch_classes(song.chart.bars[min(3, int(t / 2.0))][0][0])[1] for t, n in melody_notes]
    assert len(melody_notes) >= 4 and np.mean(in_chord) >= 0.7


def _timed(midi):
    seconds = 0.0
    for message in midi:
        seconds += message.time
        yield seconds, message


def test_mma_refusal_is_a_clear_error():
    with pytest.raises(mma.MmaError, match="mma refused the chart"):
        mma.run_mma("Groove NoSuchGroove123\n1 C\n")


def test_hydrogen_samples_land_on_the_hit_with_the_velocity_layer(tmp_path):
    instruments = kit_ops.hydrogen_instruments(HYDROGEN_KIT)
    mapping = kit_ops.note_map(instruments)
    kick = instruments[mapping[36]]
    assert kick.klass == "kick" and len(kick.layers) >= 2
    sample_rate = 44_100
    soft, loud = kick.layers[0], kick.layers[-1]
    hits = [(0.25, 36, int(soft.max_velocity * 127) - 1), (1.0, 36, 127)]
    audio = kit_ops.place_samples(hits, instruments, 2 * sample_rate, sample_rate)
    first = int(np.flatnonzero(np.abs(audio) > 1e-6)[0])
    assert first == pytest.approx(round(0.25 * sample_rate), abs=2)
    for (seconds, _, velocity), layer in zip(hits, (soft, loud)):
        start = round(seconds * sample_rate)
        expected = kit_ops._sample(layer.path, sample_rate)[:2000] * (velocity / 127 * layer.gain * kick.volume)
        np.testing.assert_allclose(audio[start:start + 2000], expected, atol=1e-6)
    assert np.abs(audio[: round(0.25 * sample_rate) - 2]).max() == 0


def test_every_kit_kind_renders_an_aligned_pair_with_provenance(tmp_path):
    config = BuildConfig(sources=("mma",), soundfonts=(FLUID,), mix_chains=True, full_context_share=0.5,
                         stem_gain_db=(-3.0, 0.0))
    song = tiny_song()
    for index, kit in enumerate((f"sf2:{FLUID}#8", f"avl:{AVL_KIT}", f"hydrogen:{HYDROGEN_KIT}")):
        variant = Variant(f"v{index}", None, FLUID, index, config, song=song, drum_kit=kit, split="train")
        record = render_variant(variant, tmp_path)
        assert record["kit"]["spec"] == kit and record["kit"]["licence"]
        assert record["mma"]["groove"] == "Rock1" and record["mma"]["style_file"] == "stdlib/basicrock.mma"
        assert record["mma"]["chords"][0] == [0.0, "Am7"] and record["licence"] == mma.MMA_LICENCE
        assert record["soundfont"] == "FluidR3_GM.sf2" and "MIT" in record["soundfont_licence"]
        assert stem_program(record, "bass") in mma.BASS_PROGRAMS  # the arrangement's, for the style measures
        assert record["programs"]["bass"] is None and stem_program(record, "drums") == record["programs"]["drum_kit"]
        assert set(record["pairs"]) == {"bass", "drums"} and set(record["mix_chains"]) == set(record["stems"])
        stems = {g: read_audio(tmp_path / rel)[0][0] for g, rel in record["stems"].items()}
        assert {len(s) for s in stems.values()} == {record["frames"]}
        drums = stems["drums"]
        assert 20 * np.log10(np.sqrt(np.mean(drums**2))) > -45, kit  # every kit kind is audible
        for target, pair in record["pairs"].items():
            assert target not in pair["context_stems"] and isinstance(pair["target_wet"], bool)
            context = read_audio(tmp_path / pair["context"])[0][0]
            np.testing.assert_allclose(context, np.sum([stems[s] for s in pair["context_stems"]], axis=0), atol=1e-5)
            np.testing.assert_array_equal(read_audio(tmp_path / pair["target"])[0][0], stems[target])


def test_a_variant_renders_the_same_twice(tmp_path):
    config = BuildConfig(sources=("mma",), soundfonts=(FLUID,), mix_chains=True)
    variant = Variant("v", None, FLUID, 0, config, song=tiny_song(bars=2), drum_kit=f"hydrogen:{HYDROGEN_KIT}")
    first = render_variant(variant, tmp_path / "a")
    render_variant(variant, tmp_path / "b")
    for rel in first["stems"].values():
        np.testing.assert_array_equal(read_audio(tmp_path / "a" / rel)[0], read_audio(tmp_path / "b" / rel)[0])


@pytest.fixture(scope="module")
def tiny_library(tmp_path_factory):
    """Five style files in MMA's own layout: two of them in held-out families."""
    root = tmp_path_factory.mktemp("lib")
    for name in ("basicrock", "bossanova", "ballad", "swing", "reggae"):
        target = root / ("stdlib" if name != "reggae" else "zoom")
        target.mkdir(exist_ok=True)
        (target / f"{name}.mma").symlink_to(mma.MMA_LIBRARY / target.name / f"{name}.mma")
    return root


def test_catalogue_reads_grooves_families_and_meters(tiny_library, tmp_path):
    grooves = mma.catalogue(tiny_library, cache=tmp_path / "catalogue.json")
    by_name = {g.name: g for g in grooves}
    assert by_name["BossaNova"].family == "bossa-samba" and by_name["BossaNova"].has_bass
    assert by_name["Swing"].family == "jazz-swing" and by_name["Swing"].beats_per_bar == 4
    assert {g.kind for g in grooves} >= {"main", "intro", "end"}
    assert mma.catalogue(tiny_library, cache=tmp_path / "catalogue.json") == grooves  # the cache reads back


def test_splits_are_disjoint_and_the_unseen_split_uses_only_held_out_sounds(tiny_library, monkeypatch, tmp_path):
    held = HeldOut(soundfonts=("/usr/share/sounds/sf2/OPL-3_FM_128M.sf2",), drum_kits=(f"avl:{AVL_KIT}",),
                   families=("bossa-samba", "reggae"))
    config = BuildConfig(sources=("mma",), soundfonts=(FLUID,), drum_kits=(f"sf2:{FLUID}#0", f"hydrogen:{HYDROGEN_KIT}"),
                         held_out=held, charts_per_groove=2)
    monkeypatch.setattr(mma, "MMA_LIBRARY", tiny_library)
    original = mma.catalogue
    monkeypatch.setattr(mma, "catalogue", lambda cache=None: original(tiny_library, cache=cache))
    variants = build_ops.plan(config, out_dir=tmp_path)
    assert {v.split for v in variants} >= {"unseen", "train"}
    by_file: dict[str, set[str]] = {}
    for variant in variants:
        by_file.setdefault(variant.song.groove.style_file, set()).add(variant.split)
        unseen = variant.song.groove.family in held.families
        assert (variant.split == "unseen") == unseen
        assert (variant.soundfont in held.soundfonts) == unseen and (variant.drum_kit in held.drum_kits) == unseen
    assert all(len(splits) == 1 for splits in by_file.values())  # a style file never crosses a split
    assert len({v.song.chart.chart_id for v in variants}) == len(variants)  # every chart is its own


def test_reserved_kits_and_soundfonts_are_refused(tmp_path):
    for spec in ("sf2:/usr/share/sounds/sf2/TimGM6mb.sf2#0", "sf2:/somewhere/sf_GMbank.sf2#0"):
        config = BuildConfig(sources=("mma",), soundfonts=(FLUID,), drum_kits=(spec,), max_grooves=1)
        with pytest.raises(ReservedError, match="reserved for independent evaluation"):
            build_ops.plan_mma(config, tmp_path)
