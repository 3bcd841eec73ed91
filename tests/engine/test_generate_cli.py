"""``backline generate`` and ``backline arrange`` end to end: real files in, real files out, tiny models
saved through the model contract (the same path as the shipped ones)."""

import numpy as np
import pytest
import soundfile as sf

from backline.cli import main
from backline.models.autoencoder import save_autoencoder
from backline.models.diffusion import save_denoiser
from tiny_bundle import make_bundle, song

RATE = 44_100


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    backend = make_bundle().backend
    save_autoencoder(folder / "ae.safetensors", backend.autoencoder, version="test")
    save_denoiser(folder / "dn.safetensors", backend.denoiser, version="test")
    return ["--autoencoder", str(folder / "ae.safetensors"), "--denoiser", str(folder / "dn.safetensors"),
            "--steps", "3", "--quiet"]


@pytest.fixture()
def context(tmp_path):
    path = tmp_path / "context.wav"
    sf.write(path, song(RATE, 2.0, 2).T, RATE)
    return path


def test_generate_then_regenerate_two_bars_of_it(models, context, tmp_path, capsys):
    first = tmp_path / "bass.wav"
    assert main(["generate", "--context", str(context), "--out", str(first), *models]) == 0
    stem, rate = sf.read(first, always_2d=True)
    assert rate == RATE and stem.shape == (2 * RATE, 2)
    second = tmp_path / "bass2.wav"
    # 240 BPM in 4/4: a bar is 1 s; the region starts at beat 4 (bar 2), so bar 3 is 1 s in
    assert main(["generate", "--context", str(context), "--stem", str(first), "--regenerate-bars", "3", "4",
                 "--tempo", "240", "--region-start-beats", "4", "--out", str(second), *models]) == 0
    redone, _ = sf.read(second, always_2d=True)
    np.testing.assert_allclose(redone[:RATE], stem[:RATE], atol=1e-4)  # bar 2 kept (16-bit WAV)
    assert np.abs(redone[RATE + 3000:] - stem[RATE + 3000:]).max() > 1e-3
    assert '"regenerate_seconds": [1.0, 2.0]' in capsys.readouterr().out


def test_loop_in_bars_with_a_seamless_cycle_and_stereo(models, context, tmp_path):
    out, cycle = tmp_path / "drums.wav", tmp_path / "cycle.wav"
    assert main(["generate", "--context", str(context), "--instrument", "drums", "--loop-bars", "0.5", "--tempo", "120",
                 "--loop-cycle-out", str(cycle), "--stereo-width", "0.5", "--out", str(out), *models]) == 0
    audio, _ = sf.read(out, always_2d=True)
    one, _ = sf.read(cycle, always_2d=True)
    assert audio.shape == (2 * RATE, 2) and abs(len(one) - RATE) <= RATE / 20  # half a bar at 120 BPM: 1 s
    assert np.abs(audio[:, 0] - audio[:, 1]).max() > 1e-4  # distinct channels (well above 16-bit steps)


def test_arrangement_from_nothing_writes_each_stem_and_the_mix(models, tmp_path):
    folder = tmp_path / "song"
    assert main(["arrange", "--seconds", "1.5", "--instruments", "drums", "bass", "--out-dir", str(folder), *models]) == 0
    drums, bass, mix = (sf.read(folder / f"{name}.wav", always_2d=True)[0] for name in ("drums", "bass", "mix"))
    assert drums.shape == bass.shape == mix.shape == (int(1.5 * RATE), 1)


@pytest.mark.parametrize("extra, message", [
    (["--loop-bars", "2"], "need the tempo"),
    (["--variation", "0.5"], "needs the stem"),
    (["--regenerate", "3", "1"], "start before end"),
    (["--stereo-width", "3"], "stereo width"),
])
def test_bad_controls_are_refused_with_a_clear_message(models, context, tmp_path, capsys, extra, message):
    out = tmp_path / "never.wav"
    stem = ["--stem", str(context)] if "--regenerate" in extra else []
    assert main(["generate", "--context", str(context), "--out", str(out), *stem, *extra, *models]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_corrupt_context_is_refused(models, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    assert main(["generate", "--context", str(bad), "--out", str(tmp_path / "x.wav"), *models]) == 2
    assert "error:" in capsys.readouterr().err


def test_generate_also_writes_the_stem_as_midi_at_the_given_tempo(models, context, tmp_path):
    import mido

    out, midi = tmp_path / "drums.wav", tmp_path / "drums.mid"
    assert main(["generate", "--context", str(context), "--instrument", "drums", "--tempo", "97",
                 "--midi", str(midi), "--out", str(out), *models]) == 0
    song_midi = mido.MidiFile(str(midi))
    tempos = [m.tempo for track in song_midi.tracks for m in track if m.type == "set_tempo"]
    assert tempos and abs(mido.tempo2bpm(tempos[0]) - 97) < 0.01


def test_generate_with_a_progress_bar_and_the_models_own_steps(models, context, tmp_path, capsys):
    """As a producer runs it: no --steps (the file's default, known only once the models load) and no --quiet, so
    the progress bar starts without a total; the stem is written and the bar ends at the steps the model took."""
    pytest.importorskip("tqdm")
    own = [flag for flag in models if flag not in ("--steps", "3", "--quiet")]
    out = tmp_path / "bass.wav"
    assert main(["generate", "--context", str(context), "--out", str(out), *own]) == 0
    assert sf.info(out).frames == sf.info(context).frames
    assert "bass:" in capsys.readouterr().err  # the bar was drawn
