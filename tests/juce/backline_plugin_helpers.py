"""Helpers shared by the plugin tests (a uniquely named module, imported from the test files)."""

from __future__ import annotations

import re

import numpy as np

STATUS_TEXT = ("idle", "working", "ready", "engine not running", "error", "cancelled")


_JUCE_BASE64 = ".ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+"


def _juce_base64_decode(size: int, text: bytes) -> bytes:
    """Decode JUCE's MemoryBlock::toBase64Encoding ("<size>.<chars>", an LSB-first 6-bit stream)."""
    value = 0
    for position, char in enumerate(text.decode("ascii")):
        value |= _JUCE_BASE64.index(char) << (6 * position)
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def _find_backline_xml(raw: bytes, depth: int = 0):
    match = re.search(rb"<BACKLINE\b(.*?)/?>", raw, re.S)
    if match or depth > 3:
        return match
    # JUCE hosts wrap a VST3 component's state as JUCE-base64 text inside their own XML.
    for blob in re.finditer(rb"(\d+)\.([A-Za-z0-9+.]{8,})", raw):
        try:
            inner = _juce_base64_decode(int(blob.group(1)), blob.group(2))
        except (ValueError, OverflowError):
            continue
        found = _find_backline_xml(inner, depth + 1)
        if found:
            return found
    return None


def parse_state(raw: bytes) -> dict:
    """The attributes of the <BACKLINE .../> element inside a saved plugin state (any host's wrapping)."""
    match = _find_backline_xml(raw)
    assert match, "no Backline state found in the plugin's saved state"
    attributes = dict(re.findall(rb'([A-Za-z_0-9]+)="([^"]*)"', match.group(1)))
    unescape = lambda s: (s.decode("utf-8").replace("&quot;", '"').replace("&apos;", "'").replace("&lt;", "<")
                          .replace("&gt;", ">").replace("&#10;", "\n").replace("&amp;", "&"))
    return {k.decode(): unescape(v) for k, v in attributes.items()}


def demo_stem(region: np.ndarray, sample_rate: int, steps: int) -> np.ndarray:
    """What the demo generator returns for a (channels, frames) region: mono float32 (frames,)."""
    from backline.plugin_bridge.demo_generator import demo_generate

    params = {"instrument": "bass", "seed": 0, "steps": steps}
    audio, rate, _ = demo_generate(params, region.astype(np.float32), sample_rate, lambda *_: None, lambda: False)
    assert rate == sample_rate
    return audio[0]


def make_signal(frames: int, sample_rate: int, seed: int = 3) -> np.ndarray:
    """A stereo bass-like test signal: a gliding tone with harmonics plus a little noise (float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / sample_rate
    tone = 0.4 * np.sin(2 * np.pi * (55.0 * t + 10.0 * t * t)) + 0.1 * np.sin(2 * np.pi * 165.0 * t)
    left = tone + 0.01 * rng.standard_normal(frames)
    right = 0.8 * tone + 0.01 * rng.standard_normal(frames)
    return np.stack([left, right]).astype(np.float32)



def _juce_base64_encode(data: bytes) -> bytes:
    value = int.from_bytes(data, "little")
    chars = ((len(data) * 8) + 5) // 6
    return f"{len(data)}.".encode() + "".join(_JUCE_BASE64[(value >> (6 * i)) & 63] for i in range(chars)).encode()


def with_state(raw: bytes, **attributes: str) -> bytes:
    """The saved state with some <BACKLINE> attributes set, as a project would restore them: the XML is
    found through the host's wrapping (JUCE binary XML headers, JUCE-base64 text) and every enclosing
    length is rewritten."""
    if raw.startswith(b"VC2!"):  # JUCE's copyXmlToBinary: magic, uint32 length, XML, NUL
        size = int.from_bytes(raw[4:8], "little")
        body = with_state(raw[8:8 + size], **attributes)
        return b"VC2!" + len(body).to_bytes(4, "little") + body + raw[8 + size:]
    if re.search(rb"<BACKLINE\b", raw):
        for name, value in attributes.items():
            escaped = value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").encode()
            raw, count = re.subn(rb'\b' + name.encode() + rb'="[^"]*"', name.encode() + b'="' + escaped + b'"', raw, count=1)
            assert count == 1, f"the saved state has no {name} attribute"
        return raw
    for blob in re.finditer(rb"(\d+)\.([A-Za-z0-9+.]{8,})", raw):
        try:
            inner = _juce_base64_decode(int(blob.group(1)), blob.group(2))
        except (ValueError, OverflowError):
            continue
        if _find_backline_xml(inner):
            return raw[:blob.start()] + _juce_base64_encode(with_state(inner, **attributes)) + raw[blob.end():]
    raise AssertionError("no Backline state found in the plugin's saved state")
