"""`backline daw`: "generate accompaniment" on a DAW region, through real sockets to the real engine pipeline on
tiny models; Ardour's Lua action's helpers run inside Ardour's own Lua interpreter (`ardour7-lua`) on a
session it built, at 96 BPM in 4/4 with the region at bar 3; and the action itself runs in Ardour's editor (the
GUI on a virtual display, Xvfb), driven by an editor hook standing in for the producer's clicks."""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from backline.engine.pipeline import make_generator
from backline.plugin_bridge import daw
import ardour_helpers as ardour
from tiny_bundle import make_bundle

TEMPO_BPM = 96.0
BAR_3_BEATS = 8.0


@pytest.fixture(scope="module")
def engine():
    """The tiny engine, with a stand-in prompt encoder (a fixed vector) so prompts are accepted."""
    from dataclasses import replace

    bundle = make_bundle()
    prompt_vector = np.linspace(-2, 2, bundle.contract.style_dim).astype(np.float32)
    return make_generator(replace(bundle, prompts=lambda text: prompt_vector))


def recording(generate, requests, step_seconds=0.0):
    """The generator, recording each job's parameters (and slowed by ``step_seconds`` a step)."""

    def run(params, context, sample_rate, progress, cancelled):
        requests.append(dict(params))

        def slow(step, total):
            time.sleep(step_seconds)
            progress(step, total)

        return generate(params, context, sample_rate, slow, cancelled)

    run.check_params, run.models = generate.check_params, generate.models
    return run


def ardour_sources(folder, sample_rate, seconds=12.0):
    """A stereo recording kept as Ardour keeps it: one mono file per channel, a bass line at 96 BPM."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    beat = (t * TEMPO_BPM / 60.0) % 1.0
    left = 0.3 * np.sin(2 * np.pi * 110 * t) * np.exp(-4 * beat)
    right = 0.3 * np.sin(2 * np.pi * 165 * t) * np.exp(-4 * beat)
    paths = []
    for name, channel in (("take%L.wav", left), ("take%R.wav", right)):
        paths.append(folder / name)
        sf.write(str(paths[-1]), channel.astype(np.float32), sample_rate, subtype="FLOAT")
    return paths, np.stack([left, right]).astype(np.float32)


def region_args(tmp_path, sources, connection_file, **overrides):
    values = dict(source=sources, start_samples=0, length_samples=0, name="Verse", out_dir=tmp_path / "stems",
                  instrument="bass", tempo=TEMPO_BPM, beats_per_bar=4, region_start_beats=BAR_3_BEATS, prompt=None,
                  style=None, midi=False, fast_draft=False, cancel_file=tmp_path / "cancel",
                  connection_file=connection_file,
                  engine_command="", no_start_engine=True, timeout=60.0)
    return argparse.Namespace(**{**values, **overrides})


@pytest.fixture(autouse=True)
def own_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.mark.parametrize("sample_rate", [44_100, 48_000])
def test_a_region_at_bar_3_comes_back_as_a_stem_of_its_exact_length_with_the_sessions_timing(
        tmp_path, start_server, engine, sample_rate):
    requests = []
    server = start_server(recording(engine, requests))
    sources, audio = ardour_sources(tmp_path, sample_rate)
    start, length = sample_rate // 2, int(5.3 * sample_rate)  # the region starts half a second into its files
    lines = []
    args = region_args(tmp_path, sources, server.connection_file, start_samples=start, length_samples=length,
                       instrument="both")
    written = daw.generate_for_region(args, lines.append)

    assert [r["instrument"] for r in requests] == ["bass", "drums"]
    for request in requests:
        assert (request["tempo_bpm"], request["beats_per_bar"], request["region_start_beats"]) == (96.0, 4, 8.0)
    assert [line.split(" ", 2)[:2] for line in lines if line.startswith("stem")] == [["stem", "bass"],
                                                                                   ["stem", "drums"]]
    fractions = [float(line.split()[1]) for line in lines if line.startswith("progress")]
    assert fractions == sorted(fractions) and fractions[-1] <= 1.0 and fractions[0] < 0.5
    region = audio[:, start:start + length]
    for (instrument, path), request in zip(written, requests):
        stem, rate = sf.read(str(path), dtype="float32", always_2d=True)
        assert path.name == f"Verse {instrument}.wav" and rate == sample_rate and stem.shape[0] == length
        expected, _, _ = engine({k: v for k, v in request.items()}, region, sample_rate, lambda *a: None,
                                lambda: False)
        np.testing.assert_allclose(stem.T, expected[:, :length], atol=1e-6)
    assert daw.remembered()["instrument"] == "both"


def test_a_fast_draft_asks_the_engine_for_its_few_step_sampler(tmp_path, start_server, engine):
    """`daw region --fast-draft` (the action's Fast draft): the stem is the engine's few-step sampler's; an engine
    without one says so and nothing is written."""
    import torch

    from backline.engine.runtime import FewStep, TorchBackend

    backend = make_bundle().backend
    student = type(backend.denoiser)(backend.denoiser.config)
    student.load_state_dict({k: 1.1 * v for k, v in backend.denoiser.state_dict().items()})
    with_student = make_generator(make_bundle().__class__(TorchBackend(
        backend.autoencoder, backend.denoiser, few_step_denoiser=student, few_step=FewStep("student", 2, "euler"))))
    requests = []
    server = start_server(recording(with_student, requests))
    sources, audio = ardour_sources(tmp_path, 44_100)
    args = region_args(tmp_path, sources, server.connection_file, length_samples=2 * 44_100, fast_draft=True)
    ((_, path),) = daw.generate_for_region(args, lambda line: None)
    (request,) = requests
    assert request["sampler"] == "few_step"
    stem = sf.read(str(path), dtype="float32", always_2d=True)[0].T
    expected, _, info = with_student(request, audio[:, :2 * 44_100], 44_100, lambda *a: None, lambda: False)
    assert (info["sampler"], info["steps"]) == ("few_step", 2)
    np.testing.assert_allclose(stem, expected, atol=1e-6)
    assert daw.remembered()["fast_draft"] is True
    without = start_server(engine)
    args = region_args(tmp_path / "other", sources, without.connection_file, length_samples=2 * 44_100,
                       fast_draft=True)
    with pytest.raises(Exception, match="no few-step sampler"):
        daw.generate_for_region(args, lambda line: None)
    assert not (tmp_path / "other" / "stems").exists() or not any((tmp_path / "other" / "stems").iterdir())


def test_the_engine_not_running_is_said_and_nothing_is_written(tmp_path, capsys):
    sources, _ = ardour_sources(tmp_path, 44_100, seconds=3.0)
    args = region_args(tmp_path, sources, tmp_path / "nowhere" / "engine.json", length_samples=44_100 * 2)
    assert daw._region(args) == 2
    out = capsys.readouterr().out
    assert out.startswith("error the Backline engine is not running") and "backline serve" in out
    assert not (tmp_path / "stems").exists() or not any((tmp_path / "stems").iterdir())


def test_an_engine_that_cannot_start_is_said(tmp_path, capsys):
    sources, _ = ardour_sources(tmp_path, 44_100, seconds=3.0)
    failing = shlex.join([sys.executable, "-c", "import sys; sys.exit(7)"])
    args = region_args(tmp_path, sources, tmp_path / "run" / "engine.json", length_samples=44_100 * 2,
                       engine_command=failing, no_start_engine=False)
    assert daw._region(args) == 2
    assert "the Backline engine did not start (it exited with status 7)" in capsys.readouterr().out


def test_an_engine_is_started_when_none_runs(tmp_path, monkeypatch):
    """The action's default: no engine yet, so it starts `backline serve` (here its DSP demo generator) and waits."""
    from backline.plugin_bridge.client import read_connection_file

    monkeypatch.setenv("BACKLINE_RESULTS_DIR", str(tmp_path / "results"))
    sources, _ = ardour_sources(tmp_path, 44_100, seconds=3.0)
    runtime = tmp_path / "run"
    command = shlex.join([sys.executable, "-m", "backline", "serve", "--demo-generator", "--runtime-dir", str(runtime)])
    args = region_args(tmp_path, sources, runtime / "engine.json", length_samples=44_100 * 2, engine_command=command,
                       no_start_engine=False)
    lines = []
    try:
        (_, path), = daw.generate_for_region(args, lines.append)
        assert sf.info(str(path)).frames == 44_100 * 2
    finally:
        pid = read_connection_file(runtime / "engine.json")["pid"]
        os.kill(pid, 15)
        for _ in range(100):
            if not (runtime / "engine.json").exists():
                break
            time.sleep(0.1)


def test_cancel_stops_the_job_and_writes_nothing(tmp_path, start_server, engine, capsys):
    requests = []
    server = start_server(recording(engine, requests, step_seconds=0.05))
    sources, _ = ardour_sources(tmp_path, 44_100, seconds=4.0)
    args = region_args(tmp_path, sources, server.connection_file, length_samples=44_100 * 3)

    def say(line):  # the action's progress window: the producer presses Cancel at the first progress
        if line.startswith("progress"):
            args.cancel_file.touch()

    with pytest.raises(daw.Cancelled):
        daw.generate_for_region(args, say)
    assert not any((tmp_path / "stems").glob("*.wav"))
    assert requests  # the job had started


@pytest.mark.parametrize("make, message", [
    (lambda audio: np.zeros_like(audio), "the region is silent"),
    (lambda audio: audio[:, :int(0.5 * 44_100)], "shorter than a beat (0.62 s at 96 BPM)"),
])
def test_a_silent_or_too_short_region_is_refused_in_words(tmp_path, make, message):
    _, audio = ardour_sources(tmp_path, 44_100, seconds=2.0)
    with pytest.raises(daw.RegionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        daw.check_region(make(audio), 44_100, TEMPO_BPM)


def test_a_region_past_the_end_of_its_file_is_refused(tmp_path):
    sources, _ = ardour_sources(tmp_path, 44_100, seconds=2.0)
    with pytest.raises(daw.RegionError, match="ends past the end"):
        daw.read_region(sources, 44_100, 44_100 * 2)


def test_install_and_uninstall_the_ardour_action(tmp_path, capsys):
    from backline.cli import main

    assert main(["daw", "install", "ardour", "--scripts-dir", str(tmp_path)]) == 0
    script = (tmp_path / daw.ACTION_FILE).read_text()
    assert daw.COMMAND_PLACEHOLDER not in script and f'"{shlex.join([sys.executable, "-m", "backline"])}"' in script
    assert main(["daw", "uninstall", "ardour", "--scripts-dir", str(tmp_path)]) == 0
    assert not (tmp_path / daw.ACTION_FILE).exists()


ARDOUR_LUA = ardour.ARDOUR_LUA

LUA_TEST = """
{factory_of}
local factory = factory_of ("{action}")  -- as Ardour keeps the action when it is added to a slot
local s = create_session ("{session}", "daw", {rate})
local tm = Temporal.TempoMap.fetch_writable ()
tm:set_tempo (Temporal.Tempo ({tempo}, {tempo}, 4), Temporal.timepos_t (0))
Temporal.TempoMap.update (tm)
local H = factory {{ helpers = true }}
local position = Temporal.timepos_t ({position})
local tempo, beats_per_bar, beats = H.timing (position)
print (string.format ("TIMING %.3f %d %.3f", tempo, beats_per_bar, beats))
for _, case in ipairs ({{ {{ "{name}", {start} }}, {{ "silence", {silent_start} }} }}) do
  local command = H.region_command {{ sources = {{ {sources} }}, start = case[2], length = {length}, name = case[1],
    out_dir = "{out_dir}", instrument = "bass", tempo = tempo, beats_per_bar = beats_per_bar, beats = beats,
    prompt = "warm, round", cancel_file = "{cancel}" }}
  local answer = H.run (command, "{cancel}", function (fraction, text) return false end)
  for _, stem in ipairs (answer.stems) do print ("STEM " .. stem.instrument .. " " .. stem.path) end
  if answer.error then print ("ERROR " .. answer.error) end
end
print ("SETTINGS " .. H.settings ().instrument .. " " .. H.settings ().prompt)
local draft = H.region_command {{ sources = {{ {sources} }}, start = 0, length = {length}, name = "Verse",
  out_dir = "{out_dir}", instrument = "bass", tempo = 96, beats_per_bar = 4, beats = 8, fast_draft = true,
  cancel_file = "{cancel}" }}
print ("DRAFT " .. tostring (draft:find ("--fast-draft", 1, true) ~= nil))
close_session ()
"""


@pytest.mark.skipif(ARDOUR_LUA is None, reason="Ardour 7 (Debian's ardour, `ardour7-lua`) is not installed")
@pytest.mark.parametrize("sample_rate", [44_100, 48_000])
def test_the_ardour_actions_helpers_run_in_ardour_on_a_96_bpm_session(tmp_path, start_server, engine, sample_rate):
    requests = []
    server = start_server(recording(engine, requests))
    sources, audio = ardour_sources(tmp_path, sample_rate)
    silent = np.zeros((1, audio.shape[1]), np.float32)  # the second case: the same files, read from a silent part
    sf.write(str(sources[0]), np.concatenate([audio[0], silent[0]]), sample_rate, subtype="FLOAT")
    sf.write(str(sources[1]), np.concatenate([audio[1], silent[0]]), sample_rate, subtype="FLOAT")
    action = daw.install_ardour(tmp_path / "scripts", shlex.join([sys.executable, "-m", "backline"]))
    position = int(BAR_3_BEATS * 60.0 / TEMPO_BPM * sample_rate)
    length = int(4 * 60.0 / TEMPO_BPM * sample_rate)  # one bar
    script = tmp_path / "test.lua"
    script.write_text(LUA_TEST.format(
        factory_of=ardour.LUA_FACTORY_OF, action=action, session=tmp_path / "session", rate=sample_rate, tempo=TEMPO_BPM, position=position,
        name="Verse", start=sample_rate, silent_start=audio.shape[1], sources=", ".join(f'"{p}"' for p in sources), length=length,
        out_dir=tmp_path / "stems", cancel=tmp_path / "cancel"))
    env = {**os.environ, "BACKLINE_RUNTIME_DIR": str(server.connection_file.parent),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = subprocess.run([ARDOUR_LUA, str(script)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    lines = [line for line in done.stdout.splitlines() if line.split(" ")[0] in ("TIMING", "STEM", "ERROR",
                                                                                  "SETTINGS", "DRAFT")]
    assert lines[0] == "TIMING 96.000 4 8.000", done.stdout + done.stderr
    assert lines[1] == f"STEM bass {tmp_path / 'stems' / 'Verse bass.wav'}", done.stdout + done.stderr
    assert lines[2].startswith("ERROR the region is silent")
    assert lines[3] == "SETTINGS bass warm, round"
    assert lines[4] == "DRAFT true"  # the dialog's Fast draft becomes `daw region --fast-draft`
    (request,) = requests
    assert (request["tempo_bpm"], request["beats_per_bar"], request["region_start_beats"]) == (96.0, 4, 8.0)
    assert request["style_prompt"] == "warm, round"
    stem, rate = sf.read(str(tmp_path / "stems" / "Verse bass.wav"), dtype="float32", always_2d=True)
    assert rate == sample_rate and stem.shape[0] == length
    expected, _, _ = engine(request, audio[:, sample_rate:sample_rate + length], sample_rate, lambda *a: None,
                            lambda: False)
    np.testing.assert_allclose(stem.T, expected[:, :length], atol=1e-6)


# The producer's hands, as an editor hook in Ardour's GUI: import the recording as a track with its region at
# bar 3, select that region, run the installed action as Ardour runs an action script (its factory's bytecode
# alone), then write every track's regions down and save. One step per timer tick, so Ardour's editor catches up.
LUA_HANDS = """
	if step == 1 then
		import_as_track ("{recording}", {position})
	elseif step == 2 then
		if not imported ("{name}") then step = 1 return end  -- the import is still running
		local selection = ArdourUI.SelectionList ()
		selection:push_back (Editor:regionview_from_region (first_region ("{name}")))
		Editor:set_selection (selection, ArdourUI.SelectionOp.Set)
		factory_of ("{action}") {{ ask = "no" }} ()
	elseif step == 3 then
		local stem = route_named ("{name} bass")
		if not stem and not for_seconds ("action", {stem_wait_s}) then step = 2 return end  -- its import is running
		if stem and not for_seconds ("stem", 3) then step = 2 return end
		local out = io.open ("{report}.part", "w")
		for route in Session:get_routes ():iter () do
			local track = route:to_track ()
			if not track:isnil () then
				for region in track:playlist ():region_list ():iter () do
					local audio, files = region:to_audioregion (), {{}}
					for c = 0, audio:n_channels () - 1 do files[#files + 1] = audio:source (c):to_filesource ():path () end
					out:write (string.format ("%s\\t%d\\t%d\\t%s\\n", track:name (), region:position ():samples (),
					                          region:length ():samples (), table.concat (files, "|")))
				end
			end
		end
		out:close ()
		Session:save_state ("", false, false, false, false, false)
		os.rename ("{report}.part", "{report}")
	end
"""


def action_in_editor(tmp_path, runtime, audio, sample_rate, position, stem_wait_s, **dismiss) -> list[list[str]]:
    """The producer's hands in Ardour's editor: ``audio`` imported at ``position`` as the track "Verse", its region
    selected and the installed action run (the engine's connection in ``runtime``); waits up to ``stem_wait_s``
    for the stem's track; ``dismiss``: run_editor's. Returns each track's region: name, position, length, files."""
    recording_path = tmp_path / "Verse.wav"
    sf.write(str(recording_path), audio.T, sample_rate, subtype="FLOAT")
    config = tmp_path / "config"
    action = daw.install_ardour(config / "ardour7" / "scripts", shlex.join([sys.executable, "-m", "backline"]))
    env = {**os.environ, "BACKLINE_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(config)}
    session = ardour.make_session(tmp_path / "session", "daw", sample_rate, TEMPO_BPM, env)
    ardour.configure(config, sample_rate, ardour.hook(LUA_HANDS.format(
        name="Verse", recording=recording_path, position=position, action=action, stem_wait_s=stem_wait_s,
        report=tmp_path / "report.tsv")), env)
    ardour.run_editor(session, env, tmp_path / "report.tsv", tmp_path / "ardour.log", **dismiss)
    return [line.split("\t") for line in (tmp_path / "report.tsv").read_text().splitlines()]


@pytest.mark.skipif(ardour.EDITOR_MISSING, reason=ardour.EDITOR_MISSING_REASON)
@pytest.mark.parametrize("sample_rate", [44_100, 48_000])
def test_in_ardours_editor_the_action_puts_the_stem_on_a_new_track_at_the_regions_position(
        tmp_path, start_server, engine, sample_rate):
    requests = []
    server = start_server(recording(engine, requests))
    _, audio = ardour_sources(tmp_path, sample_rate)
    daw.settings_file().parent.mkdir(parents=True)
    daw.settings_file().write_text('{"instrument": "bass", "prompt": "warm, round", "style": "", "midi": false}')
    position = int(BAR_3_BEATS * 60.0 / TEMPO_BPM * sample_rate)
    rows = action_in_editor(tmp_path, server.connection_file.parent, audio, sample_rate, position, stem_wait_s=60)

    tracks = {name: (int(start), int(length), path) for name, start, length, path in rows}
    assert set(tracks) == {"Verse", "Verse bass"}, rows
    start, length, _ = tracks["Verse"]
    assert start == position
    stem_start, stem_length, stem_path = tracks["Verse bass"]
    assert (stem_start, stem_length) == (start, length)  # the region's exact position and length
    (request,) = requests
    assert (request["tempo_bpm"], request["beats_per_bar"], request["region_start_beats"]) == (96.0, 4, 8.0)
    assert request["style_prompt"] == "warm, round"
    channels = [sf.read(path, dtype="float32", always_2d=True) for path in stem_path.split("|")]  # one file each
    assert [rate for _, rate in channels] == [sample_rate] * 2
    stem = np.concatenate([channel for channel, _ in channels], axis=1)[:length]
    expected, _, _ = engine(request, audio[:, :length], sample_rate, lambda *a: None, lambda: False)
    np.testing.assert_allclose(stem.T, expected[:, :length], atol=1e-6)


@pytest.mark.skipif(ardour.EDITOR_MISSING or shutil.which("xdotool") is None,
                    reason=ardour.EDITOR_MISSING_REASON + " (or xdotool)")
@pytest.mark.parametrize("case", ["silent", "shorter than a beat", "no engine, and none can start"])
def test_in_ardours_editor_a_region_backline_cannot_accompany_is_refused_in_a_dialog_and_nothing_is_imported(
        tmp_path, start_server, engine, case):
    requests = []
    runtime = start_server(recording(engine, requests)).connection_file.parent
    if case.startswith("no engine"):
        (tmp_path / "a file").write_text("")
        runtime = tmp_path / "a file" / "run"  # where `backline serve` cannot write its connection file
    sample_rate = 48_000
    frames = sample_rate // 4 if case == "shorter than a beat" else 4 * sample_rate  # a beat at 96 BPM: 0.625 s
    _, audio = ardour_sources(tmp_path, sample_rate, seconds=frames / sample_rate)
    audio = audio if case != "silent" else np.zeros_like(audio)
    refusal = "Backline could not accompany Verse"
    rows = action_in_editor(tmp_path, runtime, audio, sample_rate, sample_rate, stem_wait_s=3, dismiss=refusal)

    tracks = [row[0] for row in rows]
    assert tracks == ["Verse"]  # nothing imported
    assert (tmp_path / "ardour.log.dismissed").read_text().splitlines() == [refusal]  # the action said so, once
    assert requests == []  # refused before the engine was asked


@pytest.mark.skipif(ardour.EDITOR_MISSING or shutil.which("xdotool") is None,
                    reason=ardour.EDITOR_MISSING_REASON + " (or xdotool)")
def test_in_ardours_editor_cancel_in_the_progress_window_stops_the_job_and_nothing_is_imported(
        tmp_path, start_server, engine):
    requests = []
    server = start_server(recording(engine, requests, step_seconds=0.5))  # slow enough to be cancelled
    sample_rate = 48_000
    _, audio = ardour_sources(tmp_path, sample_rate, seconds=4.0)
    rows = action_in_editor(tmp_path, server.connection_file.parent, audio, sample_rate, sample_rate, stem_wait_s=3,
                            dismiss="Backline: Verse", key="Return")  # the Cancel button

    tracks = [row[0] for row in rows]
    assert tracks == ["Verse"]  # nothing imported
    assert "Backline: Verse" in (tmp_path / "ardour.log.dismissed").read_text().splitlines()  # the progress window
    assert len(requests) == 1 and not list((tmp_path / "session" / "backline").glob("*.wav"))
