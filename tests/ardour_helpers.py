"""Ardour 7 in the tests: its Lua interpreter (`ardour7-lua`) builds sessions, and its editor (the GUI, on a
virtual display with the "None (Dummy)" audio backend) opens them with one editor hook, a Lua script standing in
for the producer's clicks. Ardour keeps a hook as its factory's bytecode in the user configuration's
`ui_scripts`; the hook here fires on every signal (Ardour's deci-second timer among them)."""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

ARDOUR_LUA, ARDOUR_GUI, XVFB_RUN = shutil.which("ardour7-lua"), shutil.which("ardour"), shutil.which("xvfb-run")
EDITOR_MISSING = None in (ARDOUR_LUA, ARDOUR_GUI, XVFB_RUN)
EDITOR_MISSING_REASON = "Ardour 7 and Xvfb (Debian's ardour and xvfb) are not installed"
# Ardour 7.3 hangs at start under AddressSanitizer's preload (the sanitizer run of the plugin tests)
SANITIZER_PRELOADED = "libasan" in os.environ.get("LD_PRELOAD", "")

# The session the producer has: TEMPO BPM in 4/4, saved.
LUA_SESSION = """
local s = create_session ("{session}", "{name}", {rate})
local tm = Temporal.TempoMap.fetch_writable ()
tm:set_tempo (Temporal.Tempo ({tempo}, {tempo}, 4), Temporal.timepos_t (0))
Temporal.TempoMap.update (tm)
s:save_state ("", false, false, false, false, false)
close_session ()
"""

# Lua: ``factory_of (path)``, a script's factory as Ardour keeps it when the script is added to a slot: the file
# runs apart, and only its factory's bytecode is loaded back (nothing else the file defines is there).
LUA_FACTORY_OF = """
local function factory_of (path)
	local file_env = setmetatable ({ ardour = function (descriptor) end }, { __index = _G })
	loadfile (path, "t", file_env) ()
	return load (string.dump (file_env.factory, true))
end
"""

# Saves a hook's factory as Ardour's LuaCallback state ("s" holds name, source, factory bytecode, arguments).
LUA_HOOK_STATE = """
{factory_of}
local out = io.open ("{state}", "wb")
out:write ("s = {{}} s['n'] = 'Backline test hands' s['s'] = ", string.format ("%q", io.open ("{hook}"):read ("a")),
           " s['f'] = ", string.format ("%q", string.dump (factory_of ("{hook}"), true)), " s['a'] = {{}}")
out:close ()
"""

# Lua the hooks share, for inside their factory (Ardour keeps nothing else): ``once (step)`` runs a step function
# unless one is running (Ardour runs the GUI's events, and so the hook again, inside an import or an export);
# ``for_seconds`` waits by the clock; a route by name, whether an imported track is ready, the first region of a
# track by name; import an audio file as a new track at a sample position; ``factory_of`` as above.
LUA_HOOK_HELPERS = LUA_FACTORY_OF + """
local running = false
local function once (step, ...)
	if running then return end
	running = true
	local ok, message = pcall (step, ...)
	running = false
	if not ok then error (message) end
end
local since = {}
local function for_seconds (key, seconds)  -- whether ``key`` was first asked about ``seconds`` ago
	since[key] = since[key] or os.time ()
	return os.time () - since[key] >= seconds
end
local function route_named (name)
	for route in Session:get_routes ():iter () do
		if route:name () == name then return route end
	end
end
local function imported (name)  -- whether the import's track is there and filled (three seconds after it came)
	return route_named (name) ~= nil and for_seconds ("imported " .. name, 3)
end
local function first_region (name)
	for region in route_named (name):to_track ():playlist ():region_list ():iter () do return region end
end
local function import_as_track (path, position)
	local files = C.StringVector ()
	files:push_back (path)
	Editor:do_import (files, Editing.ImportDistinctFiles, Editing.ImportAsTrack, ARDOUR.SrcQuality.SrcBest,
	                  ARDOUR.MidiTrackNameSource.SMFTrackName, ARDOUR.MidiTempoMapDisposition.SMFTempoIgnore,
	                  Temporal.timepos_t (position), ARDOUR.PluginInfo (), ARDOUR.Track (), false)
end
"""


# An editor hook: ``@STEPS@`` (Lua, run once at a time, ``step`` counting the hook's calls) in a factory that holds
# the helpers above and ``@PRELUDE@``. Ardour calls it on every signal, its deci-second timer among them.
LUA_HOOK = """
ardour { ["type"] = "EditorHook", name = "Backline test hands", description = "a producer's clicks" }
function signals () local s = LuaSignal.Set () s:add ({ [LuaSignal.LuaTimerDS] = true }) return s end
function factory (params) local step = 0
@HELPERS@
@PRELUDE@
return function (...) once (function ()
	step = step + 1
@STEPS@
end) end end
"""


def hook(steps: str, prelude: str = "") -> str:
    """The source of an editor hook running ``steps`` (see LUA_HOOK), with ``prelude`` inside its factory."""
    return LUA_HOOK.replace("@HELPERS@", LUA_HOOK_HELPERS).replace("@PRELUDE@", prelude).replace("@STEPS@", steps)


def lua(script: Path, env: dict, cwd: Path) -> None:
    done = subprocess.run([ARDOUR_LUA, str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr


def make_session(folder: Path, name: str, sample_rate: int, tempo_bpm: float, env: dict) -> Path:
    """A saved session at ``tempo_bpm`` in 4/4; returns its .ardour file."""
    script = folder.parent / f"{name}-session.lua"
    script.write_text(LUA_SESSION.format(session=folder, name=name, rate=sample_rate, tempo=tempo_bpm))
    lua(script, env, folder.parent)
    return folder / f"{name}.ardour"


def configure(config_home: Path, sample_rate: int, hook_source: str, env: dict, vst3_dir: Path | None = None) -> None:
    """Ardour 7's user configuration for a headless editor: no first-run wizard, the Dummy backend started at
    ``sample_rate``, the hook ``hook_source`` installed, and (``vst3_dir``) VST3 plugins discovered there."""
    folder = config_home / "ardour7"
    folder.mkdir(parents=True, exist_ok=True)
    hook, state = config_home / "hook.lua", config_home / "hook.state"
    hook.write_text(hook_source)
    (config_home / "hook-state.lua").write_text(LUA_HOOK_STATE.format(factory_of=LUA_FACTORY_OF, hook=hook, state=state))
    lua(config_home / "hook-state.lua", env, config_home)
    (folder / ".a7").touch()
    (folder / "instant.xml").write_text("<instant><no-memory-warning/></instant>")
    plugins = (f'<Option name="discover-plugins-on-start" value="1"/><Option name="plugin-path-vst3" value="{vst3_dir}"/>'
               if vst3_dir else "")
    (folder / "config").write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<Ardour><Config><Option name="try-autostart-engine" value="1"/><Option name="hide-dummy-backend" value="0"/>{plugins}
</Config><Extra><AudioMIDISetup><EngineStates><State backend="None (Dummy)" driver="Normal Speed" device="Silence"
 input-device="" output-device="" sample-rate="{sample_rate}" buffer-size="1024" n-periods="0" input-latency="0"
 output-latency="0" active="1" use-buffered-io="0" midi-option="No MIDI I/O" lru="1"/></EngineStates>
</AudioMIDISetup></Extra></Ardour>""")
    (folder / "ui_scripts").write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<UIScripts><ActionScript/><ActionHooks><LuaCallback lua="Lua 5.3" id="1" name="Backline test hands"
 signals="{'1' * 64}">{base64.b64encode(state.read_bytes()).decode()}</LuaCallback></ActionHooks></UIScripts>""")


def run_editor(session_file: Path, env: dict, done: Path, log: Path, timeout_s: float = 240.0,
               dismiss: str | None = None, key: str = "Escape") -> None:
    """Open the session in Ardour's editor until the hook writes ``done`` (or the editor exits, or the timeout).
    Its caches (the VST3 scan's among them) go beside the configuration, as on a machine that never ran it.
    ``dismiss``: a window title; ``key`` is pressed (by xdotool) in each window with it as it appears, and its
    title written to ``<log>.dismissed``."""
    env = {**env, "XDG_CACHE_HOME": str(Path(env["XDG_CONFIG_HOME"]) / "cache")}
    command = shlex.join([ARDOUR_GUI, "--no-splash", "--no-announcements", str(session_file)])
    if dismiss:
        title, dismissed = shlex.quote(f"^{dismiss}$"), shlex.quote(f"{log}.dismissed")
        command += (f" & editor=$!; while kill -0 $editor 2>/dev/null; do for w in $(xdotool search --name {title});"
                    f" do xdotool getwindowname $w >> {dismissed} && xdotool key --window $w {shlex.quote(key)}; done;"
                    " sleep 0.5; done")
    with log.open("w") as out:
        gui = subprocess.Popen([XVFB_RUN, "-a", "-s", "-screen 0 1280x900x24", "sh", "-c", command], stdout=out,
                               stderr=subprocess.STDOUT, env=env, cwd=session_file.parent.parent,
                               start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            while not done.exists() and gui.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            os.killpg(gui.pid, 15)
            gui.wait(timeout=60)
    assert done.exists(), log.read_text()[-3000:]
