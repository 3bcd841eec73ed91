"""The built Backline VST3 hosted in pedalboard.

pedalboard gives no transport (the plugin hears "stopped at sample 0"), so tests that record turn on
the plugin's Free Run parameter: positions then count from each process() call's start (pedalboard
resets the plugin before each call). pedalboard renders non-real-time, so the block after a Generate
trigger waits for the exchange. Parameters the plugin itself changes (Status, Progress) do not reach
pedalboard's parameter view without a message loop, so the status is read from the saved state.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from backline_plugin_helpers import demo_stem, make_signal, parse_state, with_state
from bridge_helpers import osc_exchange

pedalboard = pytest.importorskip("pedalboard")

SAMPLE_RATE = 44_100


@pytest.fixture
def plugin(plugin_path, plugin_env):
    return pedalboard.load_plugin(plugin_path)


@pytest.fixture
def free_running(plugin):
    plugin.free_run = True
    return plugin


def wait_for_status(plugin, wanted: set[str], timeout_seconds: float = 30.0) -> dict:
    """Poll the saved state until its status is one of `wanted` (bounded); returns the state."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        state = parse_state(plugin.raw_state)
        if state["status"] in wanted or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_plugin_loads_with_its_parameters_and_reports_no_latency(plugin):
    assert plugin.name == "Backline"
    assert plugin.is_effect
    for name in ("generate", "record", "pass_input", "cancel", "instrument", "seed", "steps", "cfg_context",
                 "cfg_style", "beat_lock", "chord_lock", "status", "progress", "free_run", "take"):
        assert name in plugin.parameters, f"parameter {name!r} missing: {sorted(plugin.parameters)}"
    assert plugin.status == "idle"
    assert plugin.instrument == "bass"
    plugin.instrument = "drums"
    assert plugin.instrument == "drums"
    assert plugin.reported_latency_samples == 0
    state = parse_state(plugin.raw_state)
    assert state["status"] == "idle" and state["latency_samples"] == "0"


@pytest.mark.parametrize("buffer_size", [1, 64, 65, 8193])
def test_idle_plugin_passes_audio_through_unchanged(plugin, buffer_size):
    audio = make_signal(SAMPLE_RATE // 2 if buffer_size > 1 else 4_000, SAMPLE_RATE)
    out = plugin.process(audio, SAMPLE_RATE, buffer_size=buffer_size)
    np.testing.assert_array_equal(out, audio)


def test_engine_not_running_is_reported_and_audio_keeps_passing(free_running):
    plugin = free_running
    audio = make_signal(SAMPLE_RATE, SAMPLE_RATE)
    np.testing.assert_array_equal(plugin.process(audio, SAMPLE_RATE), audio)   # records the region
    plugin.generate = True
    out = plugin.process(audio, SAMPLE_RATE)
    state = wait_for_status(plugin, {"engine not running", "error"}, timeout_seconds=15)
    assert state["status"] == "engine not running", state
    assert "not running" in state["message"] and "backline serve" in state["message"], state["message"]
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, audio)


def test_stale_connection_file_is_reported_as_engine_not_answering(free_running, plugin_env):
    plugin = free_running
    runtime, _ = plugin_env
    # A connection file left behind by a crashed engine: nothing listens on that port.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (runtime / "engine.json").write_text(
        f'{{"protocol_version": 1, "transport": "tcp", "host": "127.0.0.1", "port": {port}, "token": "{"0" * 64}"}}')
    audio = make_signal(SAMPLE_RATE // 2, SAMPLE_RATE)
    plugin.process(audio, SAMPLE_RATE)
    plugin.generate = True
    out = plugin.process(audio, SAMPLE_RATE)
    state = wait_for_status(plugin, {"engine not running", "error"}, timeout_seconds=20)
    assert state["status"] == "engine not running", state
    assert "did not answer" in state["message"] and "backline serve" in state["message"], state["message"]
    np.testing.assert_array_equal(out, audio)


def test_generate_without_a_recorded_region_says_what_to_do(free_running, engine):
    plugin = free_running
    plugin.record = False
    plugin.generate = True
    plugin.process(np.zeros((2, 512), np.float32), SAMPLE_RATE)
    state = wait_for_status(plugin, {"error", "ready", "engine not running"}, timeout_seconds=15)
    assert state["status"] == "error" and "Nothing recorded" in state["message"], state


def test_full_exchange_in_pedalboard_plays_the_demo_stem_from_the_region_start(free_running, engine, plugin_env):
    plugin = free_running
    _, stems = plugin_env
    region = make_signal(SAMPLE_RATE, SAMPLE_RATE)
    plugin.steps = 4
    plugin.process(region, SAMPLE_RATE, buffer_size=512)          # Record is on by default: captures at position 0
    plugin.record = False
    plugin.pass_input = False
    plugin.generate = True
    plugin.process(np.zeros((2, 256), np.float32), SAMPLE_RATE)   # the trigger: this call waits for the exchange
    state = wait_for_status(plugin, {"ready", "error", "engine not running"}, timeout_seconds=60)
    assert state["status"] == "ready", state
    expected = demo_stem(region, SAMPLE_RATE, steps=4)
    out = plugin.process(np.zeros_like(region), SAMPLE_RATE, buffer_size=512)
    assert np.isfinite(out).all()
    for channel in out:
        np.testing.assert_allclose(channel, expected, atol=1e-6, rtol=0)
    saved = stems / state["stem_path"].rsplit("/", 1)[-1]
    assert saved.is_file() and saved.suffix == ".wav"
    import soundfile

    wav, rate = soundfile.read(saved, dtype="float32", always_2d=True)
    assert rate == SAMPLE_RATE
    np.testing.assert_allclose(wav[:, 0], expected, atol=1e-6, rtol=0)


def test_the_plugin_reaches_the_engine_over_its_unix_socket(free_running, engine, plugin_env):
    """The engine advertises its Unix socket; the plugin uses it, so a job completes even when the
    connection file's TCP port leads nowhere."""
    import socket

    plugin = free_running
    runtime, _ = plugin_env
    connection = runtime / "engine.json"
    info = json.loads(connection.read_text())
    assert info.get("ipc_endpoint", "").startswith("ipc://"), info
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        info["port"] = probe.getsockname()[1]   # nothing listens there once the probe closes
    connection.write_text(json.dumps(info))
    plugin.steps = 2
    plugin.chord_lock = 2.5
    _generate_and_wait(plugin, make_signal(SAMPLE_RATE // 2, SAMPLE_RATE), "")   # asserts the job is ready


def test_a_closed_pass_is_kept_until_record_is_switched_off_and_on(free_running, engine):
    """Playing again from the start (pedalboard resets positions each call) closes the pass and keeps it."""
    plugin = free_running
    plugin.steps = 2
    first, second = make_signal(30_000, SAMPLE_RATE, seed=1), make_signal(44_100, SAMPLE_RATE, seed=2)
    plugin.process(first, SAMPLE_RATE)
    plugin.process(second, SAMPLE_RATE)                  # jumps back into the pass: closed, `first` kept
    assert parse_state(plugin.raw_state)["region_frames"] == "30000"
    plugin.record = False
    plugin.process(second[:, :64], SAMPLE_RATE)
    plugin.record = True
    plugin.process(second, SAMPLE_RATE)                  # Record off and on: a new pass
    state = parse_state(plugin.raw_state)
    assert state["region_frames"] == "44100" and state["region_start_sample"] == "0", state
    plugin.record = False
    plugin.pass_input = False
    plugin.generate = True
    plugin.process(np.zeros((2, 64), np.float32), SAMPLE_RATE)
    assert wait_for_status(plugin, {"ready", "error", "engine not running"})["status"] == "ready"
    out = plugin.process(np.zeros_like(second), SAMPLE_RATE)
    np.testing.assert_allclose(out[0], demo_stem(second, SAMPLE_RATE, steps=2), atol=1e-6, rtol=0)


def test_job_cancelled_at_the_engine_is_reported_and_audio_keeps_passing(free_running, engine, plugin_env, monkeypatch):
    """While the offline render waits for a slow job, the job is cancelled over OSC (as `backline` tools can)."""
    import threading

    runtime, _ = plugin_env
    monkeypatch.setenv("BACKLINE_EXTRA_PARAMS", '{"demo_step_seconds": 0.5}')
    connection = json.loads((runtime / "engine.json").read_text())
    plugin = free_running
    plugin.steps = 8
    region = make_signal(SAMPLE_RATE, SAMPLE_RATE)
    plugin.process(region, SAMPLE_RATE)
    plugin.record = False
    plugin.generate = True
    cancelled = []

    def cancel_when_running():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _, (state, job_id, *_) = osc_exchange(connection["osc_port"], "/backline/ping", connection["token"])
            if state == "busy" and job_id:
                cancelled.append(osc_exchange(connection["osc_port"], "/backline/cancel", job_id, connection["token"]))
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    began = time.monotonic()
    out = plugin.process(region, SAMPLE_RATE)   # pedalboard releases the GIL while the plugin waits
    elapsed = time.monotonic() - began
    canceller.join(timeout=15)
    assert cancelled and cancelled[0][0] == "/backline/cancelling", cancelled
    state = parse_state(plugin.raw_state)
    assert state["status"] == "cancelled" and state["message"] == "Cancelled.", state
    assert elapsed < 3.9   # 8 steps of 0.5 s were not all run
    np.testing.assert_array_equal(out, region)


def test_the_style_prompt_and_the_chords_are_restored_with_the_project_and_sent_with_the_job(free_running, engine,
                                                                                            tmp_path):
    plugin = free_running
    plugin.raw_state = with_state(plugin.raw_state, prompt="slap bass", chords="Am F C G7")
    assert parse_state(plugin.raw_state)["prompt"] == "slap bass"
    assert parse_state(plugin.raw_state)["chords"] == "Am F C G7"
    plugin.steps = 2
    plugin.chord_lock = 2.5
    _generate_and_wait(plugin, make_signal(SAMPLE_RATE // 2, SAMPLE_RATE), "")   # asserts the job is ready
    sent = [json.loads(meta.read_text())["info"]["params"] for meta in (tmp_path / "results").glob("*/meta.json")]
    assert [params.get("style_prompt") for params in sent] == ["slap bass"]
    assert [params.get("chords") for params in sent] == ["Am F C G7"]
    assert "tempo_bpm" not in sent[0]  # pedalboard gives no tempo: none is sent
    assert "cfg_context" not in sent[0] and "cfg_style" not in sent[0]  # at 0: the model's own guidance
    assert sent[0]["cfg_chords"] == pytest.approx(2.5) and "cfg_tempo" not in sent[0]  # the chord lock, Advanced


def _generate_and_wait(plugin, region, previous_job):
    plugin.record = True
    plugin.process(region, SAMPLE_RATE, buffer_size=512)
    plugin.record = False
    plugin.generate = True
    plugin.process(np.zeros((2, 256), np.float32), SAMPLE_RATE)
    deadline = time.monotonic() + 60
    while True:
        state = parse_state(plugin.raw_state)
        if state["job_id"] != previous_job and state["status"] in {"ready", "error", "engine not running"}:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    assert state["status"] == "ready", state
    plugin.generate = False
    plugin.process(np.zeros((2, 256), np.float32), SAMPLE_RATE)
    return state


def test_a_style_reference_restored_with_the_project_is_uploaded_once_and_named_in_the_job(free_running, engine,
                                                                                          tmp_path):
    import soundfile

    reference = tmp_path / "reference.wav"
    soundfile.write(reference, make_signal(20_000, 22_050, seed=7).T, 22_050)
    plugin = free_running
    plugin.raw_state = with_state(plugin.raw_state, style_path=str(reference))
    assert parse_state(plugin.raw_state)["style_path"] == str(reference)
    plugin.steps = 2
    first = _generate_and_wait(plugin, make_signal(SAMPLE_RATE // 2, SAMPLE_RATE), "")
    _generate_and_wait(plugin, make_signal(SAMPLE_RATE // 2, SAMPLE_RATE), first["job_id"])  # the reference: once
    metas = [json.loads(meta.read_text()) for meta in (tmp_path / "results").glob("*/meta.json")]
    references = [m for m in metas if m["info"].get("kind") == "reference"]
    stems = [m for m in metas if m["info"].get("kind") != "reference"]
    assert len(references) == 1 and references[0]["sample_rate"] == 22_050 and references[0]["frames"] == 20_000
    assert len(stems) == 2
    for stem in stems:  # the server resolved style_job_id into the reference's audio for the generator
        assert stem["info"]["params"]["style_audio"] == "<audio (2, 20000)>"  # the stereo WAV as written
        assert stem["info"]["params"]["style_sample_rate"] == 22_050


def test_an_unreadable_style_reference_is_reported_in_words(free_running, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    plugin = free_running
    plugin.raw_state = with_state(plugin.raw_state, style_path=str(broken))
    state = parse_state(plugin.raw_state)
    assert state["status"] == "error" and "Could not read broken.wav" in state["message"], state
    assert state["style_path"] == ""
    out = plugin.process(np.zeros((2, 512), np.float32), SAMPLE_RATE)
    assert np.isfinite(out).all()


def test_takes_switch_between_generated_stems_and_come_back_with_the_project(free_running, engine, plugin_path):
    plugin = free_running
    plugin.steps = 2
    plugin.pass_input = False
    regions = [make_signal(20_000, SAMPLE_RATE, seed=s) for s in (3, 4)]
    first = _generate_and_wait(plugin, regions[0], "")
    second = _generate_and_wait(plugin, regions[1], first["job_id"])
    assert second["current_take"] == "2"  # the newest take plays
    expected = [demo_stem(region, SAMPLE_RATE, steps=2) for region in regions]

    def plays(take_number):
        plugin.take = take_number
        deadline = time.monotonic() + 15
        while parse_state(plugin.raw_state)["current_take"] != str(take_number):
            assert time.monotonic() < deadline, parse_state(plugin.raw_state)["message"]
            plugin.process(np.zeros((2, 64), np.float32), SAMPLE_RATE)
            time.sleep(0.05)
        return plugin.process(np.zeros((2, 20_000), np.float32), SAMPLE_RATE, buffer_size=512)[0]

    np.testing.assert_allclose(plays(1), expected[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(plays(2), expected[1], atol=1e-6, rtol=0)
    state = parse_state(plugin.raw_state)
    assert state["stem_path"] == second["stem_path"] and "Take 2 of 2" in state["message"]
    plugin.take = 5  # a take that does not exist changes nothing
    for _ in range(5):
        plugin.process(np.zeros((2, 64), np.float32), SAMPLE_RATE)
        time.sleep(0.05)
    assert parse_state(plugin.raw_state)["current_take"] == "2"
    saved = parse_state(plugin.raw_state)
    assert saved["stem_path"] == second["stem_path"]

    reopened = pedalboard.load_plugin(plugin_path)  # the project reopened: both takes, the second playing
    reopened.raw_state = plugin.raw_state
    reopened.free_run, reopened.pass_input = True, False
    assert parse_state(reopened.raw_state)["current_take"] == "2"
    plugin = reopened
    np.testing.assert_allclose(plays(1), expected[0], atol=1e-6, rtol=0)


def test_a_dropped_audio_file_is_the_region_until_record_captures_a_new_pass(free_running, engine, tmp_path):
    import soundfile

    region = make_signal(30_000, SAMPLE_RATE, seed=9)
    dropped = tmp_path / "region.wav"
    soundfile.write(dropped, region.T, SAMPLE_RATE, subtype="FLOAT")
    plugin = free_running
    plugin.record = False
    plugin.pass_input = False
    plugin.steps = 3
    plugin.raw_state = with_state(plugin.raw_state, region_path=str(dropped))  # as a reopened project restores it
    state = parse_state(plugin.raw_state)
    assert state["region_path"] == str(dropped) and "region.wav (dropped)" in state["message"], state
    plugin.generate = True
    plugin.process(np.zeros((2, 256), np.float32), SAMPLE_RATE)
    state = wait_for_status(plugin, {"ready", "error", "engine not running"}, timeout_seconds=60)
    assert state["status"] == "ready", state
    out = plugin.process(np.zeros_like(region), SAMPLE_RATE, buffer_size=512)
    np.testing.assert_allclose(out[0], demo_stem(region, SAMPLE_RATE, steps=3), atol=1e-6, rtol=0)
    plugin.generate = False
    plugin.record = True
    plugin.process(make_signal(5_000, SAMPLE_RATE, seed=1), SAMPLE_RATE)  # a recorded pass takes over
    assert parse_state(plugin.raw_state)["region_path"] == ""


def test_with_the_real_engine_on_a_tiny_model_the_plugin_plays_exactly_the_returned_stem(free_running, model_engine,
                                                                                          tmp_path):
    plugin = free_running
    plugin.steps = 2
    plugin.pass_input = False
    region = make_signal(SAMPLE_RATE // 2, SAMPLE_RATE, seed=12)
    plugin.process(region, SAMPLE_RATE, buffer_size=512)
    plugin.record = False
    plugin.generate = True
    plugin.process(np.zeros((2, 256), np.float32), SAMPLE_RATE)
    state = wait_for_status(plugin, {"ready", "error", "engine not running"}, timeout_seconds=90)
    assert state["status"] == "ready", state
    (meta_path,) = (tmp_path / "results").glob("*/meta.json")
    meta = json.loads(meta_path.read_text())
    assert meta["info"]["models"] == {"autoencoder": "tiny", "denoiser": "tiny"} and meta["frames"] == region.shape[1]
    returned = np.fromfile(meta_path.parent / "audio.f32", dtype="<f4").reshape(-1, meta["channels"]).T
    assert np.abs(returned).max() > 1e-3  # a real stem, not silence
    out = plugin.process(np.zeros_like(region), SAMPLE_RATE, buffer_size=512)
    for channel in range(2):
        np.testing.assert_allclose(out[channel], returned[min(channel, meta["channels"] - 1)], atol=1e-6, rtol=0)


def _sent_params(tmp_path) -> list[dict]:
    """The parameters of each stem job the engine finished, oldest first."""
    metas = [json.loads(meta.read_text()) for meta in (tmp_path / "results").glob("*/meta.json")]
    stems = sorted((m for m in metas if m["info"].get("kind") != "reference"), key=lambda m: m.get("finished_at", 0))
    return [m["info"]["params"] for m in stems]


def test_the_producers_controls_have_their_parameters_and_the_blend_default_is_the_engines(plugin):
    from backline.engine.params import default

    for name in ("action", "variation", "redo_from_bar", "redo_to_bar", "loop_bars", "stereo_width", "style_blend",
                 "midi"):
        assert name in plugin.parameters, f"parameter {name!r} missing"
    assert plugin.action == "New take" and plugin.loop_bars == 0 and not plugin.midi
    assert abs(plugin.style_blend - default("style_ratio")) < 1e-6  # one default: the command line's


def test_a_variation_starts_from_the_take_that_plays_with_its_strength(free_running, engine, tmp_path):
    plugin = free_running
    plugin.steps = 2
    first = _generate_and_wait(plugin, make_signal(20_000, SAMPLE_RATE, seed=3), "")
    plugin.action = "Variation"
    plugin.variation = 0.3
    plugin.stereo_width = 0.4
    _generate_and_wait(plugin, make_signal(20_000, SAMPLE_RATE, seed=3), first["job_id"])
    new_take, variation = _sent_params(tmp_path)
    assert "variation_strength" not in new_take and "stem" not in new_take
    assert abs(variation["variation_strength"] - 0.3) < 1e-6 and abs(variation["stereo_width"] - 0.4) < 1e-6
    assert variation["stem"].startswith("<audio (")  # the server resolved the first take's job for the generator


@pytest.mark.parametrize("controls, message", [
    ({"action": "Variation"}, "Generate a take first"),
    ({"action": "Redo bars"}, "Generate a take first"),
    ({"loop_bars": 2}, "Loop bars needs the song's tempo"),
])
def test_controls_that_cannot_apply_say_why_in_words(free_running, engine, controls, message):
    plugin = free_running
    for name, value in controls.items():
        setattr(plugin, name, value)
    state = _record_and_generate(plugin)
    assert state["status"] == "error" and message in state["message"], state


def _record_and_generate(plugin) -> dict:
    """Record a pass, press Generate, and return the state once the job is ready or refused."""
    plugin.record = True
    plugin.process(make_signal(20_000, SAMPLE_RATE), SAMPLE_RATE, buffer_size=512)
    plugin.record = False
    plugin.generate = True
    plugin.process(np.zeros((2, 256), np.float32), SAMPLE_RATE)
    return wait_for_status(plugin, {"error", "ready"})


def test_redo_bars_without_the_hosts_tempo_says_so(free_running, engine):
    plugin = free_running
    plugin.steps = 2
    _generate_and_wait(plugin, make_signal(20_000, SAMPLE_RATE), "")
    plugin.action = "Redo bars"
    state = _record_and_generate(plugin)
    assert state["status"] == "error" and "Redo bars needs the song's tempo" in state["message"], state


def test_a_reference_and_words_are_blended_as_the_producer_sets(free_running, engine, tmp_path):
    import soundfile

    reference = tmp_path / "reference.wav"
    soundfile.write(reference, make_signal(20_000, 22_050, seed=7).T, 22_050)
    plugin = free_running
    plugin.raw_state = with_state(plugin.raw_state, style_path=str(reference), prompt="slap bass")
    plugin.style_blend = 0.25
    plugin.steps = 2
    _generate_and_wait(plugin, make_signal(20_000, SAMPLE_RATE), "")
    (sent,) = _sent_params(tmp_path)
    assert sent["style_prompt"] == "slap bass" and abs(sent["style_ratio"] - 0.25) < 1e-6


def test_midi_too_saves_the_takes_transcription_beside_its_wav(free_running, model_engine):
    import mido

    plugin = free_running
    plugin.steps = 2
    plugin.midi = True
    state = _generate_and_wait(plugin, make_signal(SAMPLE_RATE, SAMPLE_RATE, seed=12), "")
    midi_path = state["midi_path"]
    assert midi_path.endswith(".mid") and midi_path[:-4] == state["stem_path"][:-4]
    assert mido.MidiFile(midi_path).tracks  # a Standard MIDI File


def test_a_bass_take_says_how_much_of_it_is_in_key(free_running, note_model_engine, tmp_path):
    plugin = free_running
    plugin.steps = 2
    state = _generate_and_wait(plugin, make_signal(SAMPLE_RATE, SAMPLE_RATE, seed=12), "")
    (meta,) = [json.loads(m.read_text()) for m in (tmp_path / "results").glob("*/meta.json")]
    candidates = meta["info"]["controls"]["candidates"]
    share = candidates["in_key_share"][candidates["chosen"]]
    assert candidates["takes"] == 4
    assert f"({round(100 * share)}% of its notes in key)" in state["message"], state["message"]


def test_bass_takes_set_under_advanced_are_asked_for_a_bass_and_never_for_drums(free_running, note_model_engine,
                                                                                 tmp_path):
    plugin = free_running
    plugin.steps = 2
    assert plugin.bass_takes == 0  # the model's own number of takes
    plugin.bass_takes = 2
    state = _generate_and_wait(plugin, make_signal(SAMPLE_RATE, SAMPLE_RATE, seed=12), "")
    (meta,) = [json.loads(m.read_text()) for m in (tmp_path / "results").glob("*/meta.json")]
    candidates = meta["info"]["controls"]["candidates"]  # this model's own default is four
    assert candidates["takes"] == 2 and len(candidates["in_key_share"]) == 2
    assert "% of its notes in key)" in state["message"], state["message"]
    plugin.instrument = "drums"  # drums have no key: the engine refuses takes for them, so none are asked for
    state = _generate_and_wait(plugin, make_signal(SAMPLE_RATE, SAMPLE_RATE, seed=13), state["job_id"])
    infos = [json.loads(m.read_text())["info"] for m in (tmp_path / "results").glob("*/meta.json")]
    (drums,) = [info for info in infos if info["instrument"] == "drums"]
    assert "candidates" not in drums["controls"]


def test_a_fast_draft_under_advanced_asks_for_the_few_step_sampler_without_guidance(free_running, few_step_engine,
                                                                                    tmp_path):
    plugin = free_running
    assert not plugin.fast_draft
    plugin.cfg_context = 2.0  # a guidance scale set under Advanced: a fast draft has its own built in
    plugin.fast_draft = True
    state = _generate_and_wait(plugin, make_signal(SAMPLE_RATE, SAMPLE_RATE, seed=14), "")
    assert state["status"] == "ready", state["message"]
    (draft,) = [json.loads(m.read_text())["info"] for m in (tmp_path / "results").glob("*/meta.json")]
    assert (draft["sampler"], draft["steps"], draft["cfg_context"]) == ("few_step", 2, 1.0)
    plugin.fast_draft = False
    state = _generate_and_wait(plugin, make_signal(SAMPLE_RATE, SAMPLE_RATE, seed=15), state["job_id"])
    infos = [json.loads(m.read_text())["info"] for m in (tmp_path / "results").glob("*/meta.json")]
    (full,) = [info for info in infos if info["sampler"] != "few_step"]
    assert full["cfg_context"] == 2.0


def test_a_fast_draft_from_an_engine_without_one_says_so(free_running, model_engine):
    plugin = free_running
    plugin.fast_draft = True
    plugin.record = True
    plugin.process(make_signal(SAMPLE_RATE, SAMPLE_RATE, seed=16), SAMPLE_RATE, buffer_size=512)
    plugin.record = False
    plugin.generate = True
    plugin.process(np.zeros((2, 256), np.float32), SAMPLE_RATE)
    state = wait_for_status(plugin, {"ready", "error", "engine not running"}, timeout_seconds=60)
    assert state["status"] == "error" and "no few-step sampler" in state["message"], state


def test_the_style_pad_shows_the_engines_sounds_and_its_point_stands_for_the_words(free_running, engine, tmp_path):
    plugin = free_running
    deadline = time.monotonic() + 15
    while not parse_state(plugin.raw_state)["style_pads"]:  # looked up as soon as an engine runs
        assert time.monotonic() < deadline, "the plugin never learnt the engine's style pads"
        time.sleep(0.1)
    from backline.plugin_bridge.demo_generator import demo_generate

    assert json.loads(parse_state(plugin.raw_state)["style_pads"]) == demo_generate.style_pads
    plugin.raw_state = with_state(plugin.raw_state, prompt="slap bass")
    plugin.style_pad_on = True
    plugin.style_pad_x, plugin.style_pad_y = 0.25, -0.5
    plugin.steps = 2
    _generate_and_wait(plugin, make_signal(20_000, SAMPLE_RATE), "")
    (sent,) = _sent_params(tmp_path)
    assert sent["style_pad"] == pytest.approx([0.25, -0.5], abs=1e-3) and "style_prompt" not in sent
