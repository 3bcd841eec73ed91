"""``backline serve``: run the engine server that DAW plugins talk to (registration stays cheap to import)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backline.engine.cli import (CONTROL_PARAMS, SOUND_PARAMS, add_model_arguments, add_param_arguments,
                                 generation_params, load_from_args)

SERVE_DESCRIPTION = """\
Run the Backline engine in the foreground until Ctrl-C or SIGTERM. Plugin instances connect over
ZeroMQ (audio and jobs); small control messages (/backline/ping [TOKEN], /backline/cancel JOB_ID TOKEN) may
be sent over OSC (UDP). Both listen on 127.0.0.1 unless --host says otherwise. Clients on this
machine may also use a Unix domain socket in RUNTIME_DIR (faster; the Python client prefers it).

On start the server writes RUNTIME_DIR/engine.json, readable by you only, holding the ports, the
socket and a secret token that clients must present; it is removed on shutdown. Finished results are kept in
RESULTS_DIR (newest --retention results, at most --retention-days old) so a plugin that reconnects
after a crash or a project reload can fetch them again. Logs go to stderr.

Port 0 (the default) picks a free port; clients find it in the connection file.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="run the engine server that DAW plugins connect to",
        description=SERVE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; anything else exposes the engine to the network)")
    serve.add_argument("--port", type=int, default=0, help="ZeroMQ TCP port (default 0: a free port)")
    serve.add_argument("--osc-port", type=int, default=0,
                       help="OSC UDP port (default 0: a free port; -1 turns OSC off)")
    serve.add_argument("--runtime-dir", type=Path, default=None,
                       help="folder for the connection file (default $BACKLINE_RUNTIME_DIR or ~/.cache/backline/runtime)")
    serve.add_argument("--results-dir", type=Path, default=None,
                       help="engine-owned folder of finished results "
                            "(default $BACKLINE_RESULTS_DIR or ~/.cache/backline/results)")
    serve.add_argument("--retention", type=int, default=100, metavar="COUNT",
                       help="keep at most this many finished results on disk (default 100)")
    serve.add_argument("--retention-days", type=float, default=7.0,
                       help="delete finished results older than this (default 7)")
    serve.add_argument("--max-seconds", type=float, default=600.0,
                       help="longest region accepted, in seconds (default 600)")
    serve.add_argument("--demo-generator", action="store_true",
                       help="serve a DSP TEST/DEMO generator (a low-passed octave-down copy of the region) instead "
                            "of the model: for trying the plugin and the protocol, not for music")
    add_model_arguments(serve)
    serve.set_defaults(func=_serve)

    client = subparsers.add_parser("client", help="talk to a running engine as a plugin would (reference client)",
                                   description=CLIENT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = client.add_subparsers(dest="action", metavar="ACTION")
    g = actions.add_parser("generate", help="send a region, wait with progress, write the stem",
                           description=CLIENT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--context", required=True, type=Path, help="the region to accompany (WAV, AIFF, FLAC)")
    g.add_argument("--out", required=True, type=Path, help="where to write the stem")
    g.add_argument("--job-id", default=None, help="job id (default: a hash of the file and parameters, so a rerun "
                                                  "fetches the finished result again)")
    add_param_arguments(g, ("instrument",) + SOUND_PARAMS + CONTROL_PARAMS, send_defaults=False)
    g.add_argument("--style", type=Path, help="a reference recording of the sound you want (uploaded once)")
    g.add_argument("--midi", type=Path, help="also write the stem transcribed as MIDI here")
    g.add_argument("--param", action="append", default=[], metavar="KEY=JSON",
                   help="a raw protocol parameter, e.g. source_job_id='\"take-1\"' (repeatable; overrides the flags)")
    g.add_argument("--connection-file", type=Path, default=None,
                   help="the engine's connection file (default: the one `backline serve` writes)")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job (default 600)")
    g.set_defaults(func=_client_generate)


CLIENT_DESCRIPTION = """\
Send a region to a running `backline serve`, show progress, and write the stem: what the plugin does,
from the command line. Parameters are the protocol's (plugin_bridge/PROTOCOL.md), values in JSON.

It takes the same flags as `backline generate` (one definition, engine/params.py); --param sends any
protocol parameter as raw JSON.

example:
  backline client generate --context song.wav --out bass.wav --instrument bass --seed 3
"""


def _client_generate(args: argparse.Namespace) -> int:
    import hashlib
    import json

    from backline.engine.audio import AudioError, read_audio, write_audio

    from .client import BridgeClient, BridgeError
    from .server import CONNECTION_FILE_NAME, default_runtime_dir

    params = generation_params(args, ("instrument",) + SOUND_PARAMS + CONTROL_PARAMS)
    for item in args.param:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value  # a bare word: a string
    try:
        audio, sample_rate = read_audio(args.context)
    except AudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    connection = args.connection_file or default_runtime_dir() / CONNECTION_FILE_NAME
    job_id = args.job_id or hashlib.sha256(audio.tobytes() + json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]

    def show(event: dict) -> None:
        if event.get("steps"):
            print(f"\r{job_id}: step {event['step']}/{event['steps']}", end="", file=sys.stderr, flush=True)

    try:
        if args.midi:
            params["midi"] = True
        style = read_audio(args.style) if args.style else None
    except AudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        with BridgeClient(connection, timeout_seconds=30.0, silence_seconds=30.0) as client:
            client.hello()
            if style is not None:
                params["style_job_id"] = client.reference(*style, timeout_seconds=args.timeout)
            stem, rate, info = client.generate(job_id, params, audio, sample_rate, on_progress=show,
                                               timeout_seconds=args.timeout)
    except BridgeError as error:  # the engine not running (a missing or stale connection file) included
        print(f"\nerror: {error.message}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    write_audio(args.out, stem, rate)
    print(f"{args.out}: {stem.shape[1] / rate:.2f} s, {stem.shape[0]} channel(s), {rate} Hz (job {job_id})")
    if args.midi and "midi_base64" in info:
        import base64

        args.midi.parent.mkdir(parents=True, exist_ok=True)
        args.midi.write_bytes(base64.b64decode(info.pop("midi_base64")))
        print(f"{args.midi}: the stem as MIDI at {info.get('midi_bpm', '?')} BPM ({info.get('midi_tempo_source', '?')})")
    print(json.dumps(info))
    return 0


def _load_generator(args: argparse.Namespace):
    if args.demo_generator:
        from .demo_generator import demo_generate

        return demo_generate, ["demo (not a model)"]
    try:
        from backline.engine.pipeline import make_generator
    except ImportError as error:
        raise SystemExit(
            f"backline serve: the engine pipeline could not be imported ({error}).\n"
            "Use --demo-generator to run the server with the DSP test generator."
        ) from None
    try:
        generate = make_generator(load_from_args(args))
    except Exception as error:  # missing or unreadable model files: say so, not a traceback
        raise SystemExit(
            f"backline serve: could not load the engine's models: {error}\n"
            "Use --demo-generator to run the server with the DSP test generator."
        ) from None
    return generate, list(getattr(generate, "models", []))


def _serve(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    import zmq

    from .protocol import Limits
    from .server import BridgeServer, keep_chunk_memory_in_process

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("backline.bridge")
    generate, models = _load_generator(args)
    if args.demo_generator:
        log.warning("serving the DEMO generator (plain DSP, not a model)")
    if args.retention < 1:
        raise SystemExit("backline serve: --retention must keep at least 1 result")
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s: other machines can reach the engine (the token is still required)", args.host)

    keep_chunk_memory_in_process()
    server = BridgeServer(
        generate, runtime_dir=args.runtime_dir, results_dir=args.results_dir, host=args.host, port=args.port,
        osc_port=None if args.osc_port < 0 else args.osc_port, limits=Limits(max_duration_seconds=args.max_seconds),
        max_results=args.retention, max_result_age_seconds=args.retention_days * 86400.0, models=models,
    )
    try:
        server.start()
    except (OSError, zmq.ZMQError) as error:
        raise SystemExit(
            f"backline serve: cannot listen on {args.host} (port {args.port}, OSC port {args.osc_port}): {error}"
        ) from None
    log.info("ready: connection file %s; %s", server.connection_file, ", ".join(models) if models else "no models")
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        log.info("shutting down")
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the bridge's commands on their own (``python -m backline.plugin_bridge.cli serve ...``)."""
    parser = argparse.ArgumentParser(prog="backline")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
