"""The producer's controls through the bridge: real sockets, the real engine pipeline on a tiny model.
A plugin generates a stem, then regenerates two bars of it by naming the first job as the source."""

import numpy as np
import pytest

from backline.engine.pipeline import make_generator
from backline.plugin_bridge.client import BridgeError
from tiny_bundle import make_bundle

RATE = 48_000


@pytest.fixture(scope="module")
def engine():
    return make_generator(make_bundle())


def region(seconds=2.0):
    t = np.arange(int(RATE * seconds)) / RATE
    mono = 0.3 * np.sin(2 * np.pi * 110 * t)
    return np.stack([mono, mono]).astype(np.float32)


def test_regenerate_bars_of_an_earlier_result_and_loop_with_tempo(start_server, connect, engine):
    client = connect(start_server(engine))
    context = region()
    first, rate, _ = client.generate("take-1", {"steps": 3}, context, RATE)
    assert rate == RATE and first.shape == context.shape
    params = {"steps": 3, "source_job_id": "take-1", "tempo_bpm": 240.0, "regenerate_bars": ["2", "3"]}
    second, _, info = client.generate("take-2", params, context, RATE)
    assert info["controls"]["regenerate_seconds"] == [1.0, 2.0]
    np.testing.assert_array_equal(second[:, :RATE], first[:, :RATE])  # bar 1 kept, sample for sample
    assert np.abs(second[:, RATE + 3000:] - first[:, RATE + 3000:]).max() > 1e-3
    looped, _, info = client.generate("loop", {"steps": 3, "loop_bars": 1, "tempo_bpm": 240.0, "stereo_width": 0.5},
                                      context, RATE)
    assert looped.shape == (2, context.shape[1]) and abs(info["controls"]["loop_seconds"] - 1.0) < 0.05


@pytest.mark.parametrize("params, message", [
    ({"source_job_id": "nope", "variation_strength": 0.5}, "no finished result"),
    ({"variation_strength": 0.5}, "needs the stem"),
    ({"loop_bars": 2}, "tempo"),
    ({"volume": 11}, "unknown generation parameter 'volume'"),
    ({"candidates": 2}, "note head"),  # this tiny autoencoder reads no notes
    ({"candidates": 0}, "from 1 to 8"),
])
def test_bad_controls_fail_the_job_with_bad_request_and_the_server_carries_on(start_server, connect, engine,
                                                                           params, message):
    client = connect(start_server(engine))
    with pytest.raises(BridgeError) as error:
        client.generate("bad", {"steps": 2, **params}, region(0.5), RATE)
    assert error.value.code == "bad_request" and message in str(error.value)
    assert client.generate("good", {"steps": 2}, region(0.5), RATE)[0].shape == (2, RATE // 2)


def test_a_source_of_another_length_is_refused(start_server, connect, engine):
    client = connect(start_server(engine))
    client.generate("short", {"steps": 2}, region(0.5), RATE)
    with pytest.raises(BridgeError, match="this region is"):
        client.generate("long", {"steps": 2, "source_job_id": "short", "variation_strength": 0.3}, region(1.0), RATE)


def test_the_stem_comes_back_as_midi_too_when_asked(start_server, connect, engine):
    import base64
    import io

    import mido

    client = connect(start_server(engine))
    _, _, info = client.generate("with-midi", {"steps": 2, "midi": True, "tempo_bpm": 100.0}, region(1.0), RATE)
    song = mido.MidiFile(file=io.BytesIO(base64.b64decode(info["midi_base64"])))
    tempos = [m.tempo for track in song.tracks for m in track if m.type == "set_tempo"]
    assert tempos and abs(mido.tempo2bpm(tempos[0]) - 100.0) < 0.01


def test_a_style_reference_travels_as_its_own_job_and_steers_later_ones(start_server, connect, engine):
    client = connect(start_server(engine))
    reference = (0.2 * np.sign(np.sin(np.arange(30_000) * 0.01)))[None].astype(np.float32)  # another sound, rate
    echoed, rate, info = client.generate("ref-1", {"kind": "reference"}, reference, 44_100)
    assert info == {"kind": "reference"} and rate == 44_100
    np.testing.assert_array_equal(echoed, reference)
    plain = client.generate("plain", {"steps": 3}, region(0.5), RATE)[0]
    styled, _, info = client.generate("styled", {"steps": 3, "style_job_id": "ref-1"}, region(0.5), RATE)
    assert info["style"] == "audio" and np.abs(styled - plain).max() > 1e-5
    with pytest.raises(BridgeError, match="no other parameters"):
        client.generate("ref-2", {"kind": "reference", "steps": 3}, reference, 44_100)
    with pytest.raises(BridgeError, match="no finished result"):
        client.generate("styled-2", {"steps": 3, "style_job_id": "missing"}, region(0.5), RATE)


def test_a_bass_is_the_most_in_key_of_its_takes_sampled_together(start_server, connect):
    client = connect(start_server(make_generator(make_bundle("tiny-notes"))))
    seen = []
    stem, _, info = client.generate("takes", {"steps": 3, "candidates": 3}, region(), RATE, on_progress=seen.append)
    takes = info["controls"]["candidates"]
    assert seen and seen[-1]["step"] == seen[-1]["steps"] == 3  # the 3 takes go through each step as one batch
    assert stem.shape == (2, 2 * RATE) and takes["takes"] == 3
    assert takes["in_key_share"][takes["chosen"]] == max(takes["in_key_share"])
    _, _, info = client.generate("default", {"steps": 2}, region(), RATE)
    assert info["controls"]["candidates"]["takes"] == 4  # the default where the autoencoder reads notes


def test_welcome_names_the_engines_models_and_runtime(start_server, connect, engine):
    server = start_server(engine)
    welcome = connect(server).hello()
    assert welcome["models"] == ["autoencoder tiny", "denoiser tiny", "runtime torch cpu"]


def test_a_prompt_beside_a_reference_blends_at_the_command_lines_default_through_the_bridge(start_server, connect):
    """One default for style_ratio (engine/params.py): the bridge blends a reference and a prompt as
    `backline generate --style ref.wav --prompt ...` does, instead of ignoring the prompt."""
    from dataclasses import replace

    from backline.engine.pipeline import GenerateRequest, generate

    tiny = make_bundle()
    prompt_vector = np.linspace(-2, 2, tiny.contract.style_dim).astype(np.float32)
    bundle = replace(tiny, prompts=lambda text: prompt_vector)
    client = connect(start_server(make_generator(bundle)))
    reference = (0.2 * np.sign(np.sin(np.arange(30_000) * 0.01)))[None].astype(np.float32)
    client.generate("ref", {"kind": "reference"}, reference, 44_100)
    context = region(0.5)
    blended, _, _ = client.generate("both", {"steps": 3, "style_job_id": "ref", "style_prompt": "slap bass"},
                                    context, RATE)
    only_reference, _, _ = client.generate("ref-only", {"steps": 3, "style_job_id": "ref"}, context, RATE)
    direct = generate(bundle, GenerateRequest(context=context, sample_rate=RATE, steps=3, style_audio=reference,
                                              style_sample_rate=44_100, style_prompt="slap bass")).audio
    np.testing.assert_allclose(blended, direct, atol=1e-6)
    assert np.abs(blended - only_reference).max() > 1e-4  # the prompt counts


def test_a_chord_chart_that_cannot_be_read_is_refused_before_the_upload(start_server, connect):
    client = connect(start_server(make_generator(make_bundle())))
    for params, reason in (({"chords": "Am Hx", "tempo_bpm": 100.0}, "starts with its root"),
                           ({"chords": "Am F"}, "need the tempo"),
                           ({"chords": "Am:0 F", "tempo_bpm": 100.0}, "more than 0")):
        with pytest.raises(BridgeError, match=reason):
            client.generate("chords", params, region(0.5), RATE)


def test_the_welcome_lists_the_style_pads_and_a_point_on_one_steers_the_job(start_server, connect):
    from dataclasses import replace

    from tiny_bundle import Pads

    tiny = make_bundle()
    pads = Pads(tiny.contract.style_dim)
    client = connect(start_server(make_generator(replace(tiny, prompts=pads))))
    welcome = client.hello()
    assert welcome["style_pads"]["bass"] == pads.pads["bass"].layout()
    point = [welcome["style_pads"]["bass"][0]["x"], welcome["style_pads"]["bass"][0]["y"]]
    steered, _, info = client.generate("pad", {"steps": 3, "style_pad": point}, region(0.5), RATE)
    plain, _, _ = client.generate("plain", {"steps": 3}, region(0.5), RATE)
    assert info["style"] == "pad" and np.abs(steered - plain).max() > 1e-4
    with pytest.raises(BridgeError, match="style pad must be two numbers"):
        client.generate("off", {"steps": 3, "style_pad": [2, 0]}, region(0.5), RATE)
