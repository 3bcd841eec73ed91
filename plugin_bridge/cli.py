"""``backline serve``: run the engine server that DAW plugins talk to (registration stays cheap to import)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SERVE_DESCRIPTION = """\
Run the Backline engine in the foreground until Ctrl-C or SIGTERM. Plugin instances connect over
ZeroMQ (audio and jobs); small control messages (/backline/ping, /backline/cancel JOB_ID TOKEN) may
be sent over OSC (UDP). Both listen on 127.0.0.1 unless --host says otherwise.

On start the server writes RUNTIME_DIR/engine.json, readable by you only, holding the ports and a
secret token that clients must present; it is removed on shutdown. Finished results are kept in
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
    serve.set_defaults(func=_serve)


def _load_generator(args: argparse.Namespace):
    if args.demo_generator:
        from .demo_generator import demo_generate

        return demo_generate, ["demo (not a model)"]
    try:
        from backline.engine.pipeline import load_default_generator
    except ImportError as error:
        raise SystemExit(
            f"backline serve: the engine pipeline is not available yet ({error}).\n"
            "Use --demo-generator to run the server with the DSP test generator."
        ) from None
    try:
        generate = load_default_generator()
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
    from .server import BridgeServer

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("backline.bridge")
    generate, models = _load_generator(args)
    if args.demo_generator:
        log.warning("serving the DEMO generator (plain DSP, not a model)")
    if args.retention < 1:
        raise SystemExit("backline serve: --retention must keep at least 1 result")
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s: other machines can reach the engine (the token is still required)", args.host)

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
    log.info("ready: connection file %s", server.connection_file)
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
