"""FluidSynth, driven in-process through its C library, rendering MIDI to float audio offline.

The ``fluidsynth`` command line reloads the soundfont for every file (about 9 s for MuseScore's sf3),
so a build renders every stem of a variant with one synth instead. The player is clocked by samples
(``player.timing-source = sample``), which makes rendering faster than real time and exactly
repeatable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_BLOCK_FRAMES = 4096


@dataclass(frozen=True)
class Effects:
    """Reverb and chorus settings of one render (FluidSynth's units: 0..1 except chorus depth in ms)."""

    reverb: bool = False
    reverb_room_size: float = 0.2
    reverb_damp: float = 0.0
    reverb_width: float = 0.5
    reverb_level: float = 0.9
    chorus: bool = False
    chorus_depth_ms: float = 8.0
    chorus_level: float = 2.0


class SynthError(RuntimeError):
    """FluidSynth could not be loaded or refused a soundfont or a MIDI file."""


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("fluidsynth") or "libfluidsynth.so.3"
    try:
        lib = ctypes.CDLL(name)
    except OSError as error:
        raise SynthError(
            "FluidSynth's library is missing: install it with `apt-get install fluidsynth`"
        ) from error
    lib.new_fluid_settings.restype = ctypes.c_void_p
    lib.new_fluid_synth.restype = ctypes.c_void_p
    lib.new_fluid_synth.argtypes = [ctypes.c_void_p]
    lib.new_fluid_player.restype = ctypes.c_void_p
    lib.new_fluid_player.argtypes = [ctypes.c_void_p]
    lib.fluid_settings_setnum.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_double]
    lib.fluid_settings_setint.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.fluid_settings_setstr.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.fluid_synth_sfload.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.fluid_player_add_mem.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.fluid_player_play.argtypes = [ctypes.c_void_p]
    lib.fluid_player_get_status.argtypes = [ctypes.c_void_p]
    lib.fluid_player_stop.argtypes = [ctypes.c_void_p]
    lib.fluid_player_join.argtypes = [ctypes.c_void_p]
    lib.delete_fluid_player.argtypes = [ctypes.c_void_p]
    lib.fluid_synth_system_reset.argtypes = [ctypes.c_void_p]
    lib.delete_fluid_synth.argtypes = [ctypes.c_void_p]
    lib.delete_fluid_settings.argtypes = [ctypes.c_void_p]
    lib.fluid_synth_write_float.argtypes = [
        ctypes.c_void_p, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
    ]
    return lib


class Synth:
    """One FluidSynth instance with one soundfont loaded; use as a context manager.

    ``render(midi_bytes, duration_seconds)`` returns mono float32 audio at ``sample_rate``. A render
    depends on what the synth rendered before only by about -75 dB (FluidSynth's reused voices keep some
    filter state), so exact repeatability needs the same sequence of renders on a fresh synth.
    """

    def __init__(self, soundfont: str | Path, sample_rate: int, effects: Effects = Effects(), *, gain: float = 0.5):
        self.sample_rate = int(sample_rate)
        self._lib = _library()
        lib = self._lib
        self._settings = lib.new_fluid_settings()
        lib.fluid_settings_setnum(self._settings, b"synth.sample-rate", float(sample_rate))
        lib.fluid_settings_setnum(self._settings, b"synth.gain", float(gain))
        lib.fluid_settings_setstr(self._settings, b"player.timing-source", b"sample")
        lib.fluid_settings_setint(self._settings, b"synth.lock-memory", 0)
        lib.fluid_settings_setint(self._settings, b"synth.reverb.active", int(effects.reverb))
        lib.fluid_settings_setint(self._settings, b"synth.chorus.active", int(effects.chorus))
        lib.fluid_settings_setnum(self._settings, b"synth.reverb.room-size", effects.reverb_room_size)
        lib.fluid_settings_setnum(self._settings, b"synth.reverb.damp", effects.reverb_damp)
        lib.fluid_settings_setnum(self._settings, b"synth.reverb.width", effects.reverb_width)
        lib.fluid_settings_setnum(self._settings, b"synth.reverb.level", effects.reverb_level)
        lib.fluid_settings_setnum(self._settings, b"synth.chorus.depth", effects.chorus_depth_ms)
        lib.fluid_settings_setnum(self._settings, b"synth.chorus.level", effects.chorus_level)
        self._synth = lib.new_fluid_synth(self._settings)
        if not self._synth:
            self.close()
            raise SynthError("FluidSynth could not create a synthesizer")
        if lib.fluid_synth_sfload(self._synth, str(soundfont).encode(), 1) < 0:
            self.close()
            raise SynthError(f"{soundfont}: FluidSynth could not load this soundfont")

    def render(self, midi_bytes: bytes, duration_seconds: float, *, tail_seconds: float = 2.0) -> np.ndarray:
        """Render exactly ``duration_seconds + tail_seconds`` of audio (zero-padded if the player ends early).

        FluidSynth's player keeps reporting "playing" until every voice has died, which can be many
        seconds of silence after the last event, so the length comes from the MIDI's own duration.
        """
        lib = self._lib
        frames = int(np.ceil((duration_seconds + tail_seconds) * self.sample_rate))
        out = np.zeros(frames, dtype=np.float32)
        left = np.zeros(_BLOCK_FRAMES, dtype=np.float32)
        right = np.zeros(_BLOCK_FRAMES, dtype=np.float32)
        lib.fluid_synth_system_reset(self._synth)  # programs and controllers of a previous render are gone
        player = lib.new_fluid_player(self._synth)
        try:
            if lib.fluid_player_add_mem(player, midi_bytes, len(midi_bytes)) != 0:
                raise SynthError("FluidSynth refused the MIDI data")
            lib.fluid_player_play(player)
            for start in range(0, frames, _BLOCK_FRAMES):
                block = self._write(left, right)
                out[start : start + _BLOCK_FRAMES] = block[: frames - start]
            lib.fluid_player_stop(player)
            lib.fluid_player_join(player)
        finally:
            lib.delete_fluid_player(player)
        return out

    def _write(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        status = self._lib.fluid_synth_write_float(
            self._synth, _BLOCK_FRAMES,
            left.ctypes.data, 0, 1, right.ctypes.data, 0, 1,
        )
        if status != 0:
            raise SynthError("FluidSynth failed while rendering")
        return 0.5 * (left + right)

    def close(self) -> None:
        if getattr(self, "_synth", None):
            self._lib.delete_fluid_synth(self._synth)
            self._synth = None
        if getattr(self, "_settings", None):
            self._lib.delete_fluid_settings(self._settings)
            self._settings = None

    def __enter__(self) -> "Synth":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
