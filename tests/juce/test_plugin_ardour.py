"""The built Backline VST3 in Ardour 7's editor (headless: Xvfb, the "None (Dummy)" backend), against the engine
server with the demo generator, at 44.1 and 48 kHz: Ardour discovers the plugin and puts it on the track of a song
at bar 3 of a 96 BPM session; the region is recorded while Ardour's transport rolls (tempo, meter and beat position
go with the job), generated, and Ardour's offline render of the track through Backline (a bounce) holds the stem
from exactly the region's first sample; the session, saved and reopened with the engine gone, renders it again.
An editor hook (tests/ardour_helpers.py) stands in for the producer's clicks."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import ardour_helpers as ardour
from backline_plugin_helpers import demo_stem, make_signal, parse_state

TEMPO_BPM, BAR_3_BEATS, STEPS = 96.0, 8.0, 4

# Lua for inside a hook's factory: the Backline insert on the "Verse" track, its parameters set by name, a bounce
# of [start, end) of that track through it (Ardour's offline render of a track's processing), and the end.
LUA_PLUGIN = """
local function backline ()
	local route = route_named ("Verse")
	for i = 0, 16 do
		local processor = route:nth_plugin (i)
		if processor:isnil () then break end
		if processor:display_name () == "Backline" then return processor:to_insert () end
	end
end
local function set (label, value)
	local insert = backline ()
	local plugin = insert:plugin (0)
	for i = 0, plugin:parameter_count () - 1 do
		if plugin:parameter_label (i) == label then
			ARDOUR.LuaAPI.set_plugin_insert_param (insert, i, value)
			return
		end
	end
	error ("Backline has no parameter " .. label)
end
local function bounce (start, finish)  -- the track's output through Backline, rendered offline: its files
	local track = route_named ("Verse"):to_track ()
	local region = track:bounce_range (start, finish, ARDOUR.InterThreadInfo (), track:main_outs (), false, "mix")
	local audio, files = region:to_audioregion (), {}
	for c = 0, audio:n_channels () - 1 do files[#files + 1] = audio:source (c):to_filesource ():path () end
	return table.concat (files, "|")
end
local function finish (done, text)
	Session:save_state ("", false, false, false, false, false)
	local out = io.open (done .. ".part", "w")
	out:write (text)
	out:close ()
	os.rename (done .. ".part", done)
end
"""

# Pass 1: import the song at bar 3, put Backline on its track, record the region while the transport rolls (from a
# second before), press Generate, wait for the stem, render the track and save.
LUA_RECORD_AND_GENERATE = """
	if step == 1 then
		import_as_track ("{recording}", {position})
	elseif step == 2 then
		if not imported ("Verse") then step = 1 return end  -- the import is still running
		local song = first_region ("Verse"):to_audioregion ()
		song:set_fade_in_active (false)  -- the song as it is, no 64-sample fades
		song:set_fade_out_active (false)
		local plugin = ARDOUR.LuaAPI.new_plugin (Session, "Backline", ARDOUR.PluginType.VST3, "")
		assert (not plugin:isnil (), "Ardour did not find the Backline VST3")
		route_named ("Verse"):add_processor_by_index (plugin, 0, nil, true)
		set ("Steps", {sampler_steps}) set ("Generate", 0) set ("Pass Input", 1) set ("Record", 1)
		Session:request_locate ({roll_from}, false, ARDOUR.LocateTransportDisposition.MustRoll,
		                        ARDOUR.TransportRequestSource.TRS_UI)
	elseif step == 3 then
		if not Session:transport_rolling () or Session:transport_sample () < {position} + {frames} then step = 2 return end
		set ("Record", 0)
		Session:request_stop (false, false, ARDOUR.TransportRequestSource.TRS_UI)
	elseif step == 4 then
		if Session:transport_rolling () then step = 3 return end
		set ("Pass Input", {pass_input}) set ("Generate", 1)
	elseif step == 5 then
		if not for_seconds ("generate", 12) then step = 4 return end  -- the engine answers in the background
		finish ("{done}", bounce ({bounce_start}, {bounce_end}))
	end
"""

# Pass 2: the saved session reopened (no engine any more): render the track again.
LUA_REOPEN = """
	if step == 1 then
		if not for_seconds ("open", 3) then step = 0 return end
		finish ("{done}", bounce ({bounce_start}, {bounce_end}))
	end
"""


def plugin_state(session_file: Path) -> dict:
    """The Backline instance's saved state inside an Ardour session file (a base64 VST3 chunk)."""
    text = session_file.read_text()
    processor = re.search(r'<Processor[^>]*name="Backline"[^>]*type="vst3".*?<chunk>([^<]*)</chunk>', text, re.S)
    assert processor, "no Backline VST3 in the saved session"
    return parse_state(base64.b64decode(processor.group(1)))


def bounced(done: Path) -> np.ndarray:
    """The track's bounce whose files the hook wrote into ``done``, as (channels, frames)."""
    return np.stack([sf.read(path, dtype="float32")[0] for path in done.read_text().split("|")])


def assert_stem_from(mix: np.ndarray, offset: int, stem: np.ndarray) -> None:
    """The (channels, frames) mix holds ``stem`` on every channel from exactly ``offset`` on (to float rounding),
    and silence before it."""
    for channel in mix:
        np.testing.assert_allclose(channel[offset:offset + len(stem)], stem, atol=1e-5, rtol=0)
        assert not channel[:offset].any()


class Song:
    """Pass 1 in a fresh session at ``sample_rate``: a song at bar 3, Backline on its track, the region recorded from
    a second before bar 3 and Generate pressed (Pass Input set to ``pass_input`` first); then the track rendered."""

    def __init__(self, tmp_path: Path, plugin_path: str, sample_rate: int, pass_input: int):
        self.tmp_path, self.plugin_path, self.sample_rate = tmp_path, plugin_path, sample_rate
        self.position = int(BAR_3_BEATS * 60.0 / TEMPO_BPM * sample_rate)
        self.frames = 2 * sample_rate
        self.audio = make_signal(4 * sample_rate, sample_rate)
        recording = tmp_path / "Verse.wav"
        sf.write(str(recording), self.audio.T, sample_rate, subtype="FLOAT")
        self.config = tmp_path / "config"
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(self.config)}
        self.session = ardour.make_session(tmp_path / "session", "plugin", sample_rate, TEMPO_BPM, self.env)
        self.roll_from = self.position - sample_rate  # a second of silence first: Ardour fades a roll in
        self.bounce_start = self.roll_from - sample_rate
        self.rendered = self.edit("first", LUA_RECORD_AND_GENERATE, recording=recording, position=self.position,
                                  roll_from=self.roll_from, frames=self.frames, sampler_steps=STEPS / 200,
                                  pass_input=pass_input)
        self.state = plugin_state(self.session)

    def edit(self, name: str, steps: str, **fields) -> np.ndarray:
        """The session opened in Ardour's editor with a hook running ``steps`` (filled in with ``fields``, where to
        render from and to, and the file it writes when done); returns the hook's render of the track."""
        steps = steps.format(bounce_start=self.bounce_start, bounce_end=self.position + 5 * self.sample_rate,
                             done=self.tmp_path / f"{name}.done", **fields)
        ardour.configure(self.config, self.sample_rate, ardour.hook(steps, prelude=LUA_PLUGIN), self.env,
                         vst3_dir=Path(self.plugin_path).parent)
        ardour.run_editor(self.session, self.env, self.tmp_path / f"{name}.done", self.tmp_path / f"{name}.log")
        return bounced(self.tmp_path / f"{name}.done")


@pytest.mark.skipif(ardour.EDITOR_MISSING, reason=ardour.EDITOR_MISSING_REASON)
@pytest.mark.skipif(ardour.SANITIZER_PRELOADED, reason="Ardour 7.3 does not start under AddressSanitizer's preload")
@pytest.mark.parametrize("sample_rate", [44_100, 48_000])
def test_in_ardour_the_plugin_records_generates_and_plays_the_stem_from_the_regions_sample(
        plugin_path, engine, plugin_env, tmp_path, sample_rate):
    song = Song(tmp_path, plugin_path, sample_rate, pass_input=0)
    state, position, frames, roll_from, audio = song.state, song.position, song.frames, song.roll_from, song.audio
    assert state["status"] == "ready", state
    start, length = int(state["region_start_sample"]), int(state["region_frames"])
    # the region starts where Ardour began to roll, a little before the located sample
    assert roll_from - 4096 <= start <= roll_from and length >= position + frames - start, state
    assert float(state["region_bpm"]) == pytest.approx(TEMPO_BPM) and state["region_beats_per_bar"] == "4", state
    assert float(state["region_start_ppq"]) == pytest.approx(start / sample_rate * TEMPO_BPM / 60.0,
                                                              abs=1 / 1920), state  # Ardour's beat: 1920 ticks
    assert int(state["stem_start_sample"]) == start
    (meta,) = (tmp_path / "results").glob("*/meta.json")
    sent = json.loads(meta.read_text())["info"]["params"]
    assert sent["tempo_bpm"] == pytest.approx(TEMPO_BPM)
    assert sent["region_start_beats"] == pytest.approx(float(state["region_start_ppq"]))

    # the stem is the engine's answer to what the track played from `start` on: silence, then the song at bar 3
    heard = np.concatenate([np.zeros((2, position - start), np.float32), audio], axis=1)[:, :length]
    heard = np.pad(heard, ((0, 0), (0, length - heard.shape[1])))
    stem, rate = sf.read(state["stem_path"], dtype="float32", always_2d=True)
    assert rate == sample_rate
    np.testing.assert_allclose(stem[:, 0], demo_stem(heard, sample_rate, STEPS), atol=1e-6, rtol=0)
    # and Ardour's render of the track through Backline holds it from exactly the region's first sample
    assert_stem_from(song.rendered, start - song.bounce_start, stem[:, 0])

    # the project saved and reopened, the engine gone: the stem plays again without generating
    engine.terminate()
    engine.wait(timeout=10)
    again = song.edit("reopened", LUA_REOPEN)
    assert_stem_from(again, start - song.bounce_start, stem[:, 0])


@pytest.mark.skipif(ardour.EDITOR_MISSING, reason=ardour.EDITOR_MISSING_REASON)
@pytest.mark.skipif(ardour.SANITIZER_PRELOADED, reason="Ardour 7.3 does not start under AddressSanitizer's preload")
def test_in_ardour_without_the_engine_the_plugin_says_so_and_the_song_plays_on(plugin_path, plugin_env, tmp_path):
    song = Song(tmp_path, plugin_path, 48_000, pass_input=1)
    assert song.state["status"] == "engine not running", song.state
    assert "backline serve" in song.state["message"], song.state["message"]
    offset = song.position - song.bounce_start
    heard = np.concatenate([np.zeros((2, offset), np.float32), song.audio], axis=1)
    np.testing.assert_array_equal(song.rendered[:, :heard.shape[1]], heard)  # the song, untouched, where it was
