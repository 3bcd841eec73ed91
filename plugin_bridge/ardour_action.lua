ardour {
	["type"]    = "EditorAction",
	name        = "Backline: generate accompaniment",
	license     = "MIT",
	author      = "Backline",
	description = [[For each selected audio region, the Backline engine generates a bass or drum stem that plays along with it (the session's tempo, meter and bar position go with it), and the stem lands on a new track at the region's position, its length the region's.]]
}

-- Installed by `backline daw install ardour`, which fills in how to run Backline. Ardour keeps only the
-- factory's bytecode when the action is added to a slot, so everything the action needs lives inside it;
-- `factory { helpers = true }` returns the helpers alone (tests run them in `ardour7-lua`, which has no editor).
function action_params ()
	return { ["ask"] = { title = "Ask for the instrument and style each time (no: repeat the last use's)",
	                     default = "yes", optional = true } }
end

function factory (params)
	local function helpers ()
		local H = { command = "@BACKLINE_COMMAND@" }
		local INSTRUMENTS = { ["Bass"] = "bass", ["Drums"] = "drums", ["Bass and drums"] = "both" }
		H.instruments = INSTRUMENTS

		function H.quote (s)
			return "'" .. (tostring (s):gsub ("'", "'\\''")) .. "'"
		end

		-- the session's tempo (BPM) and beats per bar at a position, and the position in beats from bar 1
		function H.timing (position)
			local tm = Temporal.TempoMap.read ()
			local bpm = tm:tempo_at (position):note_types_per_minute ()
			local beats_per_bar = tm:meter_at (position):divisions_per_bar ()
			local bbt = tm:bbt_at (position)
			local beats = (bbt.bars - 1) * beats_per_bar + (bbt.beats - 1) + bbt.ticks / Temporal.ticks_per_beat
			return bpm, beats_per_bar, beats
		end

		-- the `backline daw region` command line for one region (o: sources, start, length, name, out_dir,
		-- instrument, tempo, beats_per_bar, beats, prompt, style, midi, cancel_file)
		function H.region_command (o)
			local parts = { H.command, "daw", "region" }
			for _, source in ipairs (o.sources) do
				parts[#parts + 1] = "--source " .. H.quote (source)
			end
			parts[#parts + 1] = string.format ("--start-samples %d --length-samples %d", o.start, o.length)
			parts[#parts + 1] = "--name " .. H.quote (o.name) .. " --out-dir " .. H.quote (o.out_dir)
			parts[#parts + 1] = "--instrument " .. o.instrument
			parts[#parts + 1] = string.format ("--tempo %.6f --beats-per-bar %d --region-start-beats %.6f",
			                                   o.tempo, o.beats_per_bar, o.beats)
			if o.prompt and o.prompt ~= "" then parts[#parts + 1] = "--prompt " .. H.quote (o.prompt) end
			if o.style and o.style ~= "" then parts[#parts + 1] = "--style " .. H.quote (o.style) end
			if o.midi then parts[#parts + 1] = "--midi" end
			if o.fast_draft then parts[#parts + 1] = "--fast-draft" end
			parts[#parts + 1] = "--cancel-file " .. H.quote (o.cancel_file)
			return table.concat (parts, " ") .. " 2>&1"
		end

		-- run a command line and read its answer; on_progress (fraction, text) returns true to cancel
		function H.run (command, cancel_file, on_progress)
			local answer = { stems = {}, midi = {}, other = {} }
			local pipe = io.popen (command, "r")
			for line in pipe:lines () do
				local kind, rest = line:match ("^(%S+)%s*(.*)$")
				if kind == "progress" then
					local fraction, text = rest:match ("^(%S+)%s*(.*)$")
					if on_progress (tonumber (fraction), text) then
						local flag = io.open (cancel_file, "w")
						if flag then flag:close () end
					end
				elseif kind == "stem" or kind == "midi" then
					local instrument, path = rest:match ("^(%S+)%s+(.+)$")
					local list = kind == "stem" and answer.stems or answer.midi
					list[#list + 1] = { instrument = instrument, path = path }
				elseif kind == "error" then
					answer.error = rest
				elseif kind == "cancelled" then
					answer.cancelled = true
				elseif line ~= "" then
					answer.other[#answer.other + 1] = line
				end
			end
			pipe:close ()
			if not answer.error and not answer.cancelled and #answer.stems == 0 then
				answer.error = "Backline did not answer (" .. table.concat (answer.other, " / ") .. ")"
			end
			return answer
		end

		-- the last use's settings: instrument, prompt, style, midi
		function H.settings ()
			local settings = { instrument = "bass", prompt = "", style = "", midi = "false", fast_draft = "false" }
			local pipe = io.popen (H.command .. " daw settings 2>/dev/null", "r")
			for line in pipe:lines () do
				local key, value = line:match ("^([%w_]+)=(.*)$")
				if key then settings[key] = value end
			end
			pipe:close ()
			for title, value in pairs (INSTRUMENTS) do
				if value == settings.instrument then settings.instrument_title = title end
			end
			return settings
		end

		return H
	end

	local H = helpers ()
	if params and params.helpers then return H end

	return function ()
		local regions = {}
		for r in Editor:get_selection ().regions:regionlist ():iter () do
			local ar = r:to_audioregion ()
			if not ar:isnil () then regions[#regions + 1] = ar end
		end
		if #regions == 0 then
			LuaDialog.Message ("Backline", "Select one or more audio regions first.",
			                   LuaDialog.MessageType.Info, LuaDialog.ButtonType.Close):run ()
			return
		end

		local last = H.settings ()
		local rv = { instrument = last.instrument, prompt = last.prompt, style = last.style, midi = last.midi == "true",
		             fast_draft = last.fast_draft == "true" }
		if (params and params.ask or "yes") ~= "no" then
			rv = LuaDialog.Dialog ("Backline: generate accompaniment", {
				{ type = "dropdown", key = "instrument", title = "Instrument", values = H.instruments,
				  default = last.instrument_title or "Bass" },
				{ type = "entry", key = "prompt", title = "Style in words (optional)", default = last.prompt },
				{ type = "file", key = "style", title = "Style reference (optional)", path = last.style },
				{ type = "checkbox", key = "midi", title = "Also a MIDI track", default = last.midi == "true" },
				{ type = "checkbox", key = "fast_draft", title = "Fast draft (a quick take)",
				  default = last.fast_draft == "true" },
			}):run ()
			if not rv then return end
		end

		local out_dir = ARDOUR.LuaAPI.build_filename (Session:path (), "backline")
		for _, ar in ipairs (regions) do
			local sources = {}
			for c = 0, ar:n_channels () - 1 do
				sources[#sources + 1] = ar:source (c):to_filesource ():path ()
			end
			local position = ar:position ()
			local tempo, beats_per_bar, beats = H.timing (position)
			local cancel_file = os.tmpname ()
			os.remove (cancel_file)
			local command = H.region_command {
				sources = sources, start = ar:start ():samples (), length = ar:length ():samples (), name = ar:name (),
				out_dir = out_dir, instrument = rv["instrument"], tempo = tempo, beats_per_bar = beats_per_bar,
				beats = beats, prompt = rv["prompt"], style = rv["style"], midi = rv["midi"], fast_draft = rv["fast_draft"],
				cancel_file = cancel_file }
			local progress = LuaDialog.ProgressWindow ("Backline: " .. ar:name (), true)
			local answer = H.run (command, cancel_file, function (fraction, text)
				return progress:progress (fraction or 0, "Generating " .. (text or ""))
			end)
			progress:done ()
			os.remove (cancel_file)
			if answer.cancelled then return end
			if answer.error then
				LuaDialog.Message ("Backline could not accompany " .. ar:name (), answer.error,
				                   LuaDialog.MessageType.Error, LuaDialog.ButtonType.Close):run ()
				return
			end
			local imports = {}
			for _, item in ipairs (answer.stems) do imports[#imports + 1] = item.path end
			for _, item in ipairs (answer.midi) do imports[#imports + 1] = item.path end
			for _, path in ipairs (imports) do
				local files = C.StringVector ()
				files:push_back (path)
				Editor:do_import (files, Editing.ImportDistinctFiles, Editing.ImportAsTrack, ARDOUR.SrcQuality.SrcBest,
				                  ARDOUR.MidiTrackNameSource.SMFTrackName, ARDOUR.MidiTempoMapDisposition.SMFTempoIgnore,
				                  position, ARDOUR.PluginInfo (), ARDOUR.Track (), false)
			end
		end
	end
end
