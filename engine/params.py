"""The flat generation parameters every entry point speaks (command line, Python API, bridge ``params``):
each one's type, range and meaning, defined once.

``check_params`` refuses a wrong type or value with a sentence a producer understands ("steps must be a
whole number from 1 to 500, got 'ten'") as a ``ParamError`` (a ``ValueError``: the bridge answers it with
``bad_request``, never retry). Pure Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_SEED = 2**32 - 1


class ParamError(ValueError):
    """A generation parameter of the wrong type or out of range; the message names it and says what it takes."""


@dataclass(frozen=True)
class Param:
    kind: str  # "int", "number", "text", "choice", "range" (two numbers), "bars" (two bar positions), "point" (x, y)
    meaning: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    max_length: int = 0  # for text
    default: object = None  # None: the engine decides (the model's default, or the control is off)
    flag: str = ""  # the command-line flag, when not --name-with-dashes

    def describe(self) -> str:
        """What the parameter takes, as the error messages say it."""
        if self.kind == "int":
            return f"a whole number from {int(self.low)} to {int(self.high)}"
        if self.kind == "number":
            return f"a number from {self.low:g} to {self.high:g}"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "text":
            return f"text of at most {self.max_length} characters"
        if self.kind == "range":
            return f"two numbers of seconds, start before end, from {self.low:g} to {self.high:g}"
        if self.kind == "point":
            return f"two numbers (x, y), each from {self.low:g} to {self.high:g}"
        return 'two bar positions such as 5 and 9.3 (bar 5, bar 9 beat 3), the first before the second'


PARAMS: dict[str, Param] = {
    "instrument": Param("choice", "the stem to generate", choices=("bass", "drums"), default="bass"),
    "seed": Param("int", "which take: the same seed gives the same stem", 0, MAX_SEED, default=0),
    "candidates": Param("int", "bass takes to sample, keeping the one most in key with the context (default: the "
                        "model's, where the autoencoder reads notes; 1 = the seed's own take)", 1, 8),
    "steps": Param("int", "diffusion steps (default: the model's, 30 for one that names none)", 1, 500),
    "sampler": Param("choice", "the diffusion solver: few_step, the distilled model (its guidance built in), or the "
                     "full model's euler, heun, dpmpp_2m (default: few_step where it is the model's default for the "
                     "instrument and no steps or guidance are set, else the model's, dpmpp_2m for one that names none)",
                     choices=("few_step", "euler", "heun", "dpmpp_2m")),
    "cfg_context": Param("number", "guidance scale of the context (default: the model's, see its card)", 0, 20),
    "cfg_style": Param("number", "guidance scale of the style (default: the model's)", 0, 20),
    "style_ratio": Param("number", "blend of the reference with the second reference or the prompt: 0 the "
                         "reference only, 1 the other only", 0, 1, default=0.5),
    "style_prompt": Param("text", 'a text description of the sound, e.g. "slap bass, funky"', max_length=500,
                          flag="--prompt"),
    "style_pad": Param("point", "a point on the style pad, where the named sounds the welcome lists lie (instead of "
                       "words)", -1, 1),
    "style_match": Param("number", "with a reference: how far the stem's latent mean and std, and its level, move to "
                         "the reference's (default 1; 0: levelled to the context like an unsteered stem)", 0, 1),
    "regenerate_seconds": Param("range", "seconds of the stem to generate again, keeping the rest", 0, 600,
                                flag="--regenerate"),
    "regenerate_bars": Param("bars", "bar positions (5 or 5.3) of the stem to generate again between (needs the tempo)"),
    "variation_strength": Param("number", "a variation of the stem: 0 the stem itself, 1 a fresh one", 0, 1,
                                flag="--variation"),
    "loop_seconds": Param("number", "the stem repeats with this period", 0.05, 600),
    "loop_bars": Param("number", "the stem repeats every this many bars (needs the tempo)", 0.25, 256),
    "loop_strength": Param("number", "fraction of the steps the repeats are tied for (1: exact repeats)", 0, 1,
                           default=1.0),
    "stereo_width": Param("number", "pseudo-stereo width (0: the context's channel layout)", 0, 1, default=0.0),
    "chords": Param("text", 'the chords the stem follows instead of those heard in the context, one per bar '
                    '("Am F C G7") or with their beats ("Am:2 F:2"); needs the tempo and a denoiser told the chords',
                    max_length=2000),
    "cfg_tempo": Param("number", "how firmly the stem keeps to the beat (a denoiser told the beat; 1: as trained; "
                       "default: the model's)", 0, 20),
    "cfg_chords": Param("number", "how firmly the stem follows the chords (a denoiser told the chords; 1: as "
                        "trained; default: the model's)", 0, 20),
    "tempo_bpm": Param("number", "the song's tempo in BPM, for bar positions, loops in bars, the beat grid and MIDI",
                       20, 400, flag="--tempo"),
    "beats_per_bar": Param("int", "beats per bar", 1, 32, default=4),
    "region_start_beats": Param("number", "where the region starts in the song, in beats (0: bar 1 is its start)",
                                0, 100_000, default=0.0),
}
TEMPO_PARAMS = ("beats_per_bar", "region_start_beats")  # sent only with tempo_bpm


def default(name: str) -> object:
    """The one default of a parameter (GenerateRequest, the command line and the bridge all use it)."""
    return PARAMS[name].default


def _fail(name: str, param: Param, value: object) -> ParamError:
    shown = repr(value) if isinstance(value, str) else value
    return ParamError(f"{name.replace('_', ' ')} must be {param.describe()}, got {shown}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bar_position(value: object) -> float | None:
    """A bar position (5, 5.3, "5.3") as a number, or None if it is not one."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return float(value) if _number(value) and value >= 1 else None


def check_param(name: str, value: object) -> object:
    """``value`` checked against ``PARAMS[name]`` (None passes: the default); returns it (a range as a tuple)."""
    param = PARAMS.get(name)
    if param is None:
        raise ParamError(f"unknown generation parameter {name!r}; known: {', '.join(sorted(PARAMS))}")
    if value is None:
        return None
    if param.kind == "int":
        whole = isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
        if not whole or not param.low <= value <= param.high:
            raise _fail(name, param, value)
        return int(value)
    if param.kind == "number":
        if not _number(value) or not param.low <= value <= param.high:
            raise _fail(name, param, value)
        return value
    if param.kind == "choice":
        if value not in param.choices:
            raise _fail(name, param, value)
        return value
    if param.kind == "text":
        if not isinstance(value, str) or len(value) > param.max_length:
            raise _fail(name, param, value if isinstance(value, str) and len(value) < 60 else type(value).__name__)
        return value
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _fail(name, param, value)
    if param.kind == "range":
        start, end = value
        if not (_number(start) and _number(end) and param.low <= start < end <= param.high):
            raise _fail(name, param, value)
        return float(start), float(end)
    if param.kind == "point":
        if not all(_number(v) and param.low <= v <= param.high for v in value):
            raise _fail(name, param, value)
        return float(value[0]), float(value[1])
    start, end = (_bar_position(v) for v in value)
    if start is None or end is None or not start < end:
        raise _fail(name, param, value)
    return tuple(value)


def check_params(params: dict) -> dict:
    """Every parameter of ``params`` checked (types, ranges, names); returns them, ranges as tuples."""
    if not isinstance(params, dict):
        raise ParamError(f"parameters must be a JSON object of names and values, got {type(params).__name__}")
    return {name: check_param(name, value) for name, value in params.items()}
