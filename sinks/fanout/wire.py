"""Server -> client encoding: JSON with orjson, WebSocket text frames built once.

A message matched by many clients is encoded and framed once and the same
bytes are written to every socket; server frames are unmasked and the server
runs without compression, so a frame does not depend on the connection.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from sinks.base import json_default


def encode(message: dict[str, Any]) -> bytes:
    """JSON bytes (raises TypeError for a value JSON cannot carry)."""
    return orjson.dumps(message, default=json_default)


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame (RFC 6455 5.2) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def control_frame(message: dict[str, Any]) -> bytes:
    return text_frame(encode(message))
