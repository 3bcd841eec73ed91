"""Helpers shared by the bridge and plugin tests: an OSC round trip and stopping a server process."""

import signal
import socket
import subprocess

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder


def osc_exchange(port: int, address: str, *args, timeout_seconds: float = 5.0):
    """Send one OSC message to 127.0.0.1:port and return the reply as (address, params)."""
    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(arg)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(timeout_seconds)
        udp.bind(("127.0.0.1", 0))
        udp.sendto(builder.build().dgram, ("127.0.0.1", port))
        message = OscMessage(udp.recvfrom(65_536)[0])
    return message.address, message.params


def stop(process: subprocess.Popen, timeout_seconds: float = 10.0) -> None:
    """SIGTERM a server process if it still runs, then SIGKILL it if it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_seconds)
