"""WebSocket fan-out server: normalized records (and optionally raw venue frames)
to many filtered subscribers, with HTTP status / metrics / snapshot endpoints.
See docs/fanout.md."""

from sinks.fanout.auth import make_token
from sinks.fanout.server import FanoutServer
from sinks.fanout.threaded import ServerThread, acquire, release
from sinks.fanout.writers import FanoutWriter, RawFrameWriter

__all__ = [
    "FanoutServer",
    "FanoutWriter",
    "RawFrameWriter",
    "ServerThread",
    "acquire",
    "make_token",
    "release",
]
