"""Python SDK for the candlewax fan-out server (docs/fanout.md).

from candlewax.client import Stream

async for msg in Stream("ws://127.0.0.1:8765/stream", channels=["trades"],
                        symbols=["BTC/USDT"]):
    print(msg)
"""

from candlewax.client.messages import Message, decode
from candlewax.client.protocol import (
    DEFAULT_URL,
    Dropped,
    Heartbeat,
    Hello,
    Pong,
    RawMessage,
    ServerError,
    Snapshot,
    Subscribed,
    Unsubscribed,
    VenueStatus,
)
from candlewax.client.stream import AuthError, Stream, StreamError, StreamStats, SubscriptionError
from candlewax.schema import BBO, Bar, Book, DeadLetter, Late, Status, Trade

__all__ = [
    "BBO",
    "DEFAULT_URL",
    "AuthError",
    "Bar",
    "Book",
    "DeadLetter",
    "Dropped",
    "Heartbeat",
    "Hello",
    "Late",
    "Message",
    "Pong",
    "RawMessage",
    "ServerError",
    "Snapshot",
    "Status",
    "Stream",
    "StreamError",
    "StreamStats",
    "Subscribed",
    "SubscriptionError",
    "Trade",
    "Unsubscribed",
    "VenueStatus",
    "decode",
]
