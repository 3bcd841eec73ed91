"""``backline daw``: "generate accompaniment" on a DAW's region, and installing that action into the DAW.

A DAW action (Ardour's Lua editor action, ``ardour_action.lua``) knows the selected region: its source files,
where it starts in them, its length, and the session's tempo, meter and bar position there. It runs
``backline daw region`` with those, reads its line-per-event answer on stdout, and imports the stems as new
tracks at the region's position. The answer's lines:

    progress FRACTION TEXT     while a job runs (FRACTION 0..1 over all instruments)
    stem INSTRUMENT PATH       a finished stem: the region's exact length, at the source's sample rate
    midi INSTRUMENT PATH       its transcription (with --midi)
    error MESSAGE              nothing was made; MESSAGE is for the producer
    cancelled                  the cancel file appeared; the job was cancelled, nothing was made

Exit status 0 when every stem was made, 2 on an error, 3 when cancelled.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SILENT_PEAK = 1e-4  # -80 dBFS: a region quieter than this everywhere holds nothing to play along with
ENGINE_START_SECONDS = 120.0  # how long a started engine may take to load its models
ACTION_FILE = "backline_generate_accompaniment.lua"
ACTION_TEMPLATE = Path(__file__).with_name("ardour_action.lua")
COMMAND_PLACEHOLDER = "@BACKLINE_COMMAND@"


class RegionError(Exception):
    """A region the action cannot accompany, or an engine it cannot reach: the message is for the producer."""


class Cancelled(Exception):
    pass


def settings_file() -> Path:
    """Where the action remembers the instrument, prompt and reference of its last use."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "backline" / "daw.json"


def ardour_scripts_dir() -> Path:
    """Ardour 7's folder of user Lua scripts."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "ardour7" / "scripts"


def read_region(sources: list[Path], start_samples: int, length_samples: int) -> tuple[np.ndarray, int]:
    """The region's audio (channels, frames) from its source files (one per channel, as Ardour keeps them, or one
    multichannel file), ``start_samples`` into them, and their sample rate."""
    import soundfile as sf

    channels, rates = [], set()
    for source in sources:
        try:
            with sf.SoundFile(str(source)) as f:
                rates.add(f.samplerate)
                if start_samples + length_samples > f.frames:
                    raise RegionError(f"the region ends past the end of its audio file {source} "
                                      f"({start_samples + length_samples} > {f.frames} samples)")
                f.seek(start_samples)
                channels.extend(np.atleast_2d(f.read(length_samples, dtype="float32", always_2d=True).T))
        except (sf.LibsndfileError, RuntimeError) as error:
            raise RegionError(f"cannot read the region's audio file {source}: {error}") from None
    if len(rates) != 1:
        raise RegionError(f"the region's audio files have different sample rates: {sorted(rates)}")
    return np.stack(channels).astype(np.float32), rates.pop()


def check_region(audio: np.ndarray, sample_rate: int, tempo_bpm: float | None) -> None:
    """Refuse a region that is silent, or shorter than one beat (or than a second without a tempo)."""
    seconds = audio.shape[1] / sample_rate
    shortest = 60.0 / tempo_bpm if tempo_bpm else 1.0
    if seconds < shortest:
        unit = f"a beat ({shortest:.2f} s at {tempo_bpm:g} BPM)" if tempo_bpm else "a second"
        raise RegionError(f"the region is {seconds:.2f} s long, shorter than {unit}: select a longer region")
    if not np.isfinite(audio).all() or float(np.abs(audio).max()) < SILENT_PEAK:
        raise RegionError("the region is silent: there is nothing to play along with; select a region with audio")


def engine_connection(connection_file: Path, engine_command: list[str] | None, log_file: Path) -> Path:
    """The connection file of a running engine; with ``engine_command``, start it if none runs and wait for it."""
    from .client import EngineNotRunning, read_connection_file

    try:
        read_connection_file(connection_file)
        return connection_file
    except EngineNotRunning as error:
        if engine_command is None:
            raise RegionError(f"{error.message}") from None
    log_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log_file, "ab") as log:
            process = subprocess.Popen(engine_command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
    except OSError as error:
        raise RegionError(f"could not start the Backline engine ({shlex.join(engine_command)}): {error}") from None
    deadline = time.monotonic() + ENGINE_START_SECONDS
    while time.monotonic() < deadline:
        try:
            read_connection_file(connection_file)
            return connection_file
        except EngineNotRunning:
            if process.poll() is not None:
                raise RegionError(f"the Backline engine did not start (it exited with status {process.returncode}); "
                                  f"see {log_file}") from None
            time.sleep(0.2)
    raise RegionError(f"the Backline engine did not start within {ENGINE_START_SECONDS:.0f} s; see {log_file}")


def run_job(client, job_id: str, params: dict, audio: np.ndarray, sample_rate: int, cancel_file: Path | None,
            report, timeout_seconds: float):
    """Submit, follow and fetch one job; cancels it and raises ``Cancelled`` once ``cancel_file`` exists."""
    from . import protocol as P
    from .client import BridgeError, BridgeTimeout

    client.submit(job_id, params, audio, sample_rate)
    deadline = time.monotonic() + timeout_seconds
    while True:
        if cancel_file is not None and cancel_file.exists():
            client.cancel(job_id)
            raise Cancelled
        try:
            job = client.wait(job_id, on_progress=lambda m: report(m["step"] / max(m["steps"], 1)),
                              timeout_seconds=0.25)
        except BridgeTimeout:
            if time.monotonic() > deadline or time.monotonic() - client.last_message_at > client.silence_seconds:
                raise
            continue
        if job["state"] != P.DONE:
            raise BridgeError.from_error(job.get("error") or {"code": job["state"], "message": f"job {job['state']}"})
        return client.fetch(job_id)


def generate_for_region(args: argparse.Namespace, say) -> list[tuple[str, Path]]:
    """Everything ``backline daw region`` does; ``say(line)`` prints one answer line. Returns what it wrote."""
    from backline.engine.audio import AudioError, read_audio, write_audio

    from .client import BridgeClient
    from .server import CONNECTION_FILE_NAME, default_runtime_dir

    audio, sample_rate = read_region(args.source, args.start_samples, args.length_samples)
    check_region(audio, sample_rate, args.tempo)
    instruments = ["bass", "drums"] if args.instrument == "both" else [args.instrument]
    params: dict = {}
    if args.tempo:
        params.update(tempo_bpm=args.tempo, beats_per_bar=args.beats_per_bar, region_start_beats=args.region_start_beats)
    if args.prompt:
        params["style_prompt"] = args.prompt
    if args.midi:
        params["midi"] = True
    if args.fast_draft:
        params["sampler"] = "few_step"
    try:
        style = read_audio(args.style) if args.style else None
    except AudioError as error:
        raise RegionError(f"the style reference cannot be used: {error}") from None
    connection = args.connection_file or default_runtime_dir() / CONNECTION_FILE_NAME
    engine_command = None if args.no_start_engine else shlex.split(args.engine_command)
    connection = engine_connection(connection, engine_command, connection.parent / "engine.log")
    written: list[tuple[str, Path]] = []
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with BridgeClient(connection, timeout_seconds=30.0, silence_seconds=30.0) as client:
        client.hello()
        if style is not None:
            params["style_job_id"] = client.reference(*style, timeout_seconds=args.timeout)
        for index, instrument in enumerate(instruments):
            job_params = {**params, "instrument": instrument}
            job_id = "daw-" + hashlib.sha256(audio.tobytes() + json.dumps(job_params, sort_keys=True).encode()
                                             ).hexdigest()[:16]

            def report(fraction: float, index=index, instrument=instrument) -> None:
                say(f"progress {(index + fraction) / len(instruments):.3f} {instrument}")

            stem, rate, info = run_job(client, job_id, job_params, audio, sample_rate, args.cancel_file, report,
                                       args.timeout)
            stem = fit_length(stem, args.length_samples)
            path = write_audio(args.out_dir / f"{args.name} {instrument}.wav", stem, rate, subtype="FLOAT")
            written.append((instrument, path))
            if args.midi and "midi_base64" in info:
                import base64

                midi = args.out_dir / f"{args.name} {instrument}.mid"
                midi.write_bytes(base64.b64decode(info["midi_base64"]))
                written.append((instrument + "-midi", midi))
    for instrument, path in written:
        say(f"midi {instrument[:-5]} {path}" if instrument.endswith("-midi") else f"stem {instrument} {path}")
    remember(args)
    return written


def fit_length(stem: np.ndarray, frames: int) -> np.ndarray:
    """The stem cut or zero-padded to exactly ``frames`` (the region's length)."""
    if stem.shape[1] >= frames:
        return stem[:, :frames]
    return np.pad(stem, ((0, 0), (0, frames - stem.shape[1])))


def remember(args: argparse.Namespace) -> None:
    path = settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"instrument": args.instrument, "prompt": args.prompt or "",
                                "style": str(args.style or ""), "midi": bool(args.midi),
                                "fast_draft": bool(args.fast_draft)}))


def remembered() -> dict:
    """The last use's settings (defaults where there was none)."""
    settings = {"instrument": "bass", "prompt": "", "style": "", "midi": False, "fast_draft": False}
    try:
        settings.update(json.loads(settings_file().read_text()))
    except (OSError, ValueError):
        pass
    return settings


def install_ardour(scripts_dir: Path, command: str) -> Path:
    """Write the Lua editor action into Ardour's scripts folder, calling Backline through ``command``."""
    scripts_dir.mkdir(parents=True, exist_ok=True)
    path = scripts_dir / ACTION_FILE
    path.write_text(ACTION_TEMPLATE.read_text().replace(COMMAND_PLACEHOLDER, command.replace("\\", "\\\\")
                                                        .replace('"', '\\"')))
    return path


def register(subparsers: argparse._SubParsersAction) -> None:
    daw = subparsers.add_parser("daw", help="generate for a DAW's region; install the DAW action",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = daw.add_subparsers(dest="action", metavar="ACTION", required=True)

    r = actions.add_parser("region", help="generate stems for a region of audio files (what the DAW action runs)")
    r.add_argument("--source", type=Path, action="append", required=True,
                   help="the region's audio file; repeat for each channel's file (Ardour keeps one per channel)")
    r.add_argument("--start-samples", type=int, required=True, help="where the region starts in its files")
    r.add_argument("--length-samples", type=int, required=True, help="the region's length")
    r.add_argument("--name", required=True, help="the region's name: stems are written as 'NAME INSTRUMENT.wav'")
    r.add_argument("--out-dir", type=Path, required=True, help="folder for the stems")
    r.add_argument("--instrument", choices=("bass", "drums", "both"), default="bass")
    r.add_argument("--tempo", type=float, help="the session's tempo at the region, BPM")
    r.add_argument("--beats-per-bar", type=int, default=4)
    r.add_argument("--region-start-beats", type=float, default=0.0,
                   help="where the region starts in the session, in beats from bar 1")
    r.add_argument("--prompt", help='words for the sound, e.g. "slap bass, funky"')
    r.add_argument("--style", type=Path, help="a reference recording of the sound you want")
    r.add_argument("--midi", action="store_true", help="also write each stem's transcription as MIDI")
    r.add_argument("--fast-draft", action="store_true",
                   help="a quick take from the engine's few-step sampler (a model distilled for speed)")
    r.add_argument("--cancel-file", type=Path, help="cancel the job once this file exists")
    r.add_argument("--connection-file", type=Path, help="the engine's connection file (default: `backline serve`'s)")
    r.add_argument("--engine-command", default=shlex.join([sys.executable, "-m", "backline", "serve"]),
                   help="how to start the engine when none runs (default: this Python's `backline serve`)")
    r.add_argument("--no-start-engine", action="store_true", help="fail instead of starting the engine")
    r.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each stem")
    r.set_defaults(func=_region)

    s = actions.add_parser("settings", help="the last use's instrument, prompt and reference, as KEY=VALUE lines")
    s.set_defaults(func=_settings)

    for verb in ("install", "uninstall"):
        i = actions.add_parser(verb, help=f"{verb} the 'generate accompaniment' action in a DAW")
        i.add_argument("daw", choices=("ardour",))
        i.add_argument("--scripts-dir", type=Path, help="the DAW's user scripts folder (default: Ardour 7's)")
        i.set_defaults(func=_install if verb == "install" else _uninstall)


def _region(args: argparse.Namespace) -> int:
    from .client import BridgeError

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        generate_for_region(args, say)
    except Cancelled:
        say("cancelled")
        return 3
    except (RegionError, BridgeError) as error:
        say("error " + (error.message if isinstance(error, BridgeError) else str(error)).replace("\n", " "))
        return 2
    return 0


def _settings(args: argparse.Namespace) -> int:
    for key, value in remembered().items():
        print(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return 0


def _install(args: argparse.Namespace) -> int:
    command = shlex.join([sys.executable, "-m", "backline"])
    path = install_ardour(args.scripts_dir or ardour_scripts_dir(), command)
    print(f"{path}: installed. In Ardour: Edit > Lua Scripts > Script Manager > Action Scripts, pick an empty slot "
          "and add 'Backline: generate accompaniment'; then select a region and run it from the toolbar or "
          "Edit > Scripted Actions (add it to a second slot with Ask set to no for a one-click new take with the last "
          "settings). Start the engine with `backline serve` (the action starts it if it is not running).")
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    path = (args.scripts_dir or ardour_scripts_dir()) / ACTION_FILE
    if path.exists():
        path.unlink()
        print(f"{path}: removed")
    else:
        print(f"{path}: was not installed")
    return 0
