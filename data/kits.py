"""Drum kits for the data engine: a soundfont's GM kits, the AVL kits, and Hydrogen's sample kits.

A kit is named by a spec string, so a build's config and manifest say exactly which was played:

    sf2:<soundfont path>#<program>   a General MIDI kit (bank 128) of a soundfont, on channel 10
    avl:<soundfont path>             an AVL drum kit (Debian avldrums.lv2-soundfont): it plays only on a
                                     melodic channel with program 0, so channel 10 is moved there
    hydrogen:<kit folder>            a Hydrogen drum kit (Debian hydrogen-drumkits): WAV/FLAC samples with
                                     velocity layers, placed here at each MIDI hit

Hydrogen kits do not share a note layout, so each kit instrument is classified by its name (kick,
snare, closed hi-hat...) and every General MIDI drum note is played by the instrument of its class.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import mido
import numpy as np
import soxr

from backline.data import midi as midi_ops
from backline.data.synth import Effects, Synth
from backline.engine.audio import read_audio

HYDROGEN_KITS = Path("/usr/share/hydrogen/data/drumkits")
AVL_SOUNDFONTS = Path("/usr/share/sounds/sf2")

# Licences of Debian's hydrogen-drumkits (from /usr/share/doc/hydrogen-drumkits/copyright).
HYDROGEN_LICENCES = {
    "Audiophob": "CC0-1.0", "BJA_Pacific": "CC-BY-SA-3.0-US", "ColomboAcousticDrumkit": "GPL-2+",
    "ElectricEmpireKit": "GPL-2", "ForzeeStereo": "GPL-2", "Gimme A Hand 1.0": "GPL-2",
    "HardElectro1": "GPL-2", "Millo-Drums_v.1": "GPL-2", "Millo_MultiLayered2": "GPL-2",
    "Millo_MultiLayered3": "GPL-2", "The Black Pearl 1.0": "GPL-2", "VariBreaks": "GPL-2",
    "circAfrique v4": "CC-BY-SA-3.0", "rumpf_kit_z01_h2": "CC-BY-3.0",
}
AVL_LICENCE = "GPL-2+"  # Debian avldrums.lv2-soundfont (its copyright file): Glen MacArthur's AVL Drumkits
GM_SOUNDFONT_LICENCE = "MIT"  # FluidR3_GM, FluidR3Mono, MuseScore_General (Debian packages)
OPL3_LICENCE = "GPL-3+ and CC-BY-SA-4.0"  # Debian opl3-soundfont (its copyright file)

# General MIDI drum note -> class; a kit instrument's class comes from its name.
GM_CLASSES = {
    35: "kick", 36: "kick", 37: "stick", 38: "snare", 39: "clap", 40: "snare", 41: "tom_low", 42: "hat_closed",
    43: "tom_low", 44: "hat_pedal", 45: "tom_mid", 46: "hat_open", 47: "tom_mid", 48: "tom_high",
    49: "crash", 50: "tom_high", 51: "ride", 52: "crash", 53: "ride_bell", 54: "tambourine", 55: "crash",
    56: "cowbell", 57: "crash", 58: "perc", 59: "ride", 60: "conga_high", 61: "conga_low", 62: "conga_high",
    63: "conga_high", 64: "conga_low", 65: "perc", 66: "perc", 67: "perc", 68: "perc", 69: "shaker",
    70: "shaker", 71: "perc", 72: "perc", 73: "perc", 74: "perc", 75: "stick", 76: "perc", 77: "perc",
    78: "perc", 79: "perc", 80: "perc", 81: "perc", 82: "shaker",
}
# A class the kit lacks is played by the first of its fallbacks that the kit has (else not at all).
FALLBACKS = {
    "stick": ("snare",), "clap": ("snare",), "hat_pedal": ("hat_closed",), "hat_open": ("hat_closed",),
    "hat_closed": ("hat_pedal", "shaker"), "tom_mid": ("tom_low", "tom_high"), "tom_high": ("tom_mid", "tom_low"),
    "tom_low": ("tom_mid", "tom_high"), "ride": ("hat_closed", "crash"), "ride_bell": ("ride", "cowbell"),
    "crash": ("ride",), "tambourine": ("shaker", "perc"), "cowbell": ("perc",), "shaker": ("tambourine", "perc"),
    "conga_high": ("conga_low", "perc", "tom_high"), "conga_low": ("conga_high", "perc", "tom_low"),
    "perc": ("shaker",),
}
_NAME_CLASSES = (  # (regex on the lower-cased instrument name, class); first match wins
    (r"kick|bass ?drum|\bbd\b|bassdrum", "kick"), (r"stick|rim", "stick"), (r"clap", "clap"),
    (r"snare|\bsd\b", "snare"), (r"pedal", "hat_pedal"), (r"open", "hat_open"),
    (r"hat|hh|hi-?h", "hat_closed"), (r"ride ?bell|bell", "ride_bell"), (r"ride", "ride"),
    (r"crash|splash|china|cymbal", "crash"), (r"floor|low ?tom|tom ?(low|lo|3|4)", "tom_low"),
    (r"(hi|high) ?tom|tom ?(hi|high|1)", "tom_high"), (r"tom", "tom_mid"), (r"tamb", "tambourine"),
    (r"cowbell", "cowbell"), (r"shake|cabasa|maraca", "shaker"), (r"conga|bongo|djembe", "conga_high"),
)


class KitError(ValueError):
    """A kit spec that cannot be used; the message says why."""


def instrument_class(name: str) -> str | None:
    lowered = name.lower()
    for pattern, klass in _NAME_CLASSES:
        if re.search(pattern, lowered):
            return klass
    return None


@dataclass(frozen=True)
class Layer:
    path: Path
    min_velocity: float  # 0..1, as Hydrogen writes it
    max_velocity: float
    gain: float


@dataclass(frozen=True)
class HydrogenInstrument:
    name: str
    klass: str | None
    volume: float
    layers: tuple[Layer, ...]


def _text(element, tag: str, default: str = "") -> str:
    found = element.find(tag)
    return found.text.strip() if found is not None and found.text else default


@lru_cache(maxsize=None)
def hydrogen_instruments(kit_folder: str) -> tuple[HydrogenInstrument, ...]:
    """The instruments of a Hydrogen kit (``drumkit.xml``), each with its velocity layers."""
    folder = Path(kit_folder)
    xml = folder / "drumkit.xml"
    if not xml.is_file():
        raise KitError(f"{folder}: not a Hydrogen drum kit (no drumkit.xml)")
    text = re.sub(r'\sxmlns="[^"]+"', "", xml.read_text(errors="replace"), count=1)
    root = ElementTree.fromstring(text)
    out = []
    for element in root.iter("instrument"):
        name = _text(element, "name")
        layers = []
        for layer in element.iter("layer"):
            path = folder / _text(layer, "filename")
            if path.is_file():
                layers.append(Layer(path, float(_text(layer, "min", "0")), float(_text(layer, "max", "1")),
                                    float(_text(layer, "gain", "1"))))
        direct = _text(element, "filename")
        if not layers and direct and (folder / direct).is_file():  # the older one-sample format
            layers.append(Layer(folder / direct, 0.0, 1.0, 1.0))
        if layers:
            out.append(HydrogenInstrument(name, instrument_class(name), float(_text(element, "volume", "1")),
                                          tuple(sorted(layers, key=lambda l: l.min_velocity))))
    return tuple(out)


def note_map(instruments: tuple[HydrogenInstrument, ...]) -> dict[int, int]:
    """GM drum note -> index of the kit instrument that plays it (classes, then fallbacks)."""
    by_class: dict[str, int] = {}
    for index, instrument in enumerate(instruments):
        if instrument.klass and instrument.klass not in by_class:
            by_class[instrument.klass] = index
    mapping = {}
    for note, klass in GM_CLASSES.items():
        for candidate in (klass,) + FALLBACKS.get(klass, ()):
            if candidate in by_class:
                mapping[note] = by_class[candidate]
                break
    return mapping


def usable_hydrogen_kit(kit_folder: str | Path) -> bool:
    """A kit can play a groove when it has a kick, a snare and a hi-hat or ride."""
    classes = {i.klass for i in hydrogen_instruments(str(kit_folder))}
    return {"kick", "snare"} <= classes and bool(classes & {"hat_closed", "ride"})


@lru_cache(maxsize=256)
def _sample(path: Path, sample_rate: int) -> np.ndarray:
    audio, rate = read_audio(path)
    mono = audio.mean(axis=0).astype(np.float32)
    return mono if rate == sample_rate else soxr.resample(mono, rate, sample_rate).astype(np.float32)


def place_samples(hits: list[tuple[float, int, int]], instruments: tuple[HydrogenInstrument, ...], frames: int,
                  sample_rate: int) -> np.ndarray:
    """Mono audio with each hit ``(seconds, gm_note, velocity)`` played by its kit instrument's layer.

    The layer is the one whose velocity range holds ``velocity / 127``; the sample starts at
    ``round(seconds * sample_rate)`` and is scaled by velocity, layer gain and instrument volume.
    """
    mapping = note_map(instruments)
    out = np.zeros(frames, np.float32)
    for seconds, note, velocity in hits:
        if note not in mapping:
            continue
        instrument = instruments[mapping[note]]
        level = velocity / 127.0
        layer = next((l for l in instrument.layers if l.min_velocity <= level <= l.max_velocity), instrument.layers[-1])
        sample = _sample(layer.path, sample_rate)
        start = int(round(seconds * sample_rate))
        if start >= frames:
            continue
        stop = min(frames, start + len(sample))
        out[start:stop] += sample[: stop - start] * (level * layer.gain * instrument.volume)
    return out


def drum_hits(midi_bytes: bytes) -> list[tuple[float, int, int]]:
    """(seconds, note, velocity) of every drum hit (channel 10) of a MIDI file, following its tempo map."""
    midi = midi_ops.parse(midi_bytes)
    hits, seconds = [], 0.0
    for message in midi:  # mido's playback iteration: delta times in seconds, tempo map applied
        seconds += message.time
        if message.type == "note_on" and message.velocity > 0 and message.channel == midi_ops.DRUM_CHANNEL:
            hits.append((seconds, message.note, message.velocity))
    return hits


def to_melodic_channel(midi_bytes: bytes, channel: int = 0) -> bytes:
    """Channel 10 moved to ``channel`` with program 0 (how the AVL soundfonts must be played)."""
    midi = midi_ops.parse(midi_bytes)
    out = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat)
    for index, track in enumerate(midi.tracks):
        events, tick = [], 0
        if index == 0:
            events.append((0, mido.Message("program_change", channel=channel, program=0)))
        for message in track:
            tick += message.time
            if hasattr(message, "channel"):
                if message.channel != midi_ops.DRUM_CHANNEL or message.type == "program_change":
                    continue
                message = message.copy(channel=channel)
            events.append((tick, message))
        out.tracks.append(midi_ops.track_from_events(events))
    return midi_ops.to_bytes(out)


@dataclass(frozen=True)
class Kit:
    spec: str

    @property
    def kind(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def location(self) -> str:
        return self.spec.split(":", 1)[1].split("#")[0]

    @property
    def program(self) -> int | None:
        return int(self.spec.split("#")[1]) if self.kind == "sf2" else None

    @property
    def name(self) -> str:
        base = Path(self.location).name if self.kind == "hydrogen" else Path(self.location).stem
        return f"{base}#{self.program}" if self.kind == "sf2" else base

    @property
    def licence(self) -> str:
        if self.kind == "hydrogen":
            return HYDROGEN_LICENCES.get(Path(self.location).name, "see /usr/share/doc/hydrogen-drumkits/copyright")
        if self.kind == "avl":
            return AVL_LICENCE
        return OPL3_LICENCE if "OPL" in self.location else GM_SOUNDFONT_LICENCE

    def check(self) -> None:
        if self.kind not in ("sf2", "avl", "hydrogen"):
            raise KitError(f"{self.spec}: a kit is sf2:<soundfont>#<program>, avl:<soundfont> or hydrogen:<folder>")
        if not Path(self.location).exists():
            raise KitError(f"{self.spec}: not found (apt-get install the package that ships it)")
        if self.kind == "hydrogen" and not usable_hydrogen_kit(self.location):
            raise KitError(f"{self.spec}: this Hydrogen kit has no kick, snare and hi-hat or ride")

    def render(self, drum_midi: bytes, duration_seconds: float, sample_rate: int, effects: Effects,
               tail_seconds: float = 2.0, synth: Synth | None = None) -> np.ndarray:
        """Mono audio of the drum channel of ``drum_midi``, ``duration_seconds + tail_seconds`` long.

        ``synth``: a synth with this kit's soundfont already loaded (else a fresh one is made).
        """
        if self.kind == "hydrogen":
            frames = int(np.ceil((duration_seconds + tail_seconds) * sample_rate))
            return place_samples(drum_hits(drum_midi), hydrogen_instruments(self.location), frames, sample_rate)
        midi = to_melodic_channel(drum_midi) if self.kind == "avl" else _with_kit(drum_midi, self.program)
        if synth is not None:
            return synth.render(midi, duration_seconds, tail_seconds=tail_seconds)
        with Synth(self.location, sample_rate, effects) as fresh:
            return fresh.render(midi, duration_seconds, tail_seconds=tail_seconds)


def _with_kit(midi_bytes: bytes, program: int) -> bytes:
    """Every program change on channel 10 set to ``program`` (one added at the start)."""
    midi = midi_ops.parse(midi_bytes)
    out = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat)
    for index, track in enumerate(midi.tracks):
        events, tick = [], 0
        if index == 0:
            events.append((0, mido.Message("program_change", channel=midi_ops.DRUM_CHANNEL, program=program)))
        for message in track:
            tick += message.time
            if message.type == "program_change" and message.channel == midi_ops.DRUM_CHANNEL:
                message = message.copy(program=program)
            events.append((tick, message))
        out.tracks.append(midi_ops.track_from_events(events))
    return midi_ops.to_bytes(out)


def soundfont_kits(soundfont: str, programs=midi_ops.DRUM_KITS) -> list[str]:
    return [f"sf2:{soundfont}#{p}" for p in programs]


def hydrogen_kits(root: Path = HYDROGEN_KITS) -> list[str]:
    return [f"hydrogen:{p}" for p in sorted(root.iterdir()) if (p / "drumkit.xml").is_file() and usable_hydrogen_kit(p)] \
        if root.is_dir() else []


def avl_kits(root: Path = AVL_SOUNDFONTS) -> list[str]:
    return [f"avl:{p}" for p in sorted(root.glob("*_LV2.sf2"))]
