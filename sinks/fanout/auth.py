"""Client authentication (static or HMAC-signed expiring tokens) and rate limits.

Signed token: ``<subject>.<expires>.<signature>`` where ``expires`` is Unix
seconds and ``signature`` is the unpadded URL-safe base64 of
HMAC-SHA256(secret, "<subject>.<expires>"). Anyone holding the secret mints
them (:func:`make_token`); the server needs no token list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request

from candlewax.config import WebsocketAuth

_SUBJECT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class AuthError(ValueError):
    """Rejected token; the message is the close reason sent to the client."""


def _signature(secret: str, body: str) -> str:
    digest = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(secret: str, subject: str, ttl_s: float, now: float | None = None) -> str:
    """A token for ``subject`` valid for ``ttl_s`` seconds."""
    if not _SUBJECT_RE.match(subject):
        raise ValueError("subject must be 1-64 characters of A-Z a-z 0-9 _ -")
    expires = int((time.time() if now is None else now) + ttl_s)
    body = f"{subject}.{expires}"
    return f"{body}.{_signature(secret, body)}"


def token_of(request: Request) -> str | None:
    """The token of a request: ``Authorization: Bearer <token>`` or ``?token=``."""
    header = request.headers.get("Authorization")
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[-1] if values else None


class Authenticator:
    def __init__(self, cfg: WebsocketAuth) -> None:
        self.tokens = [t.encode() for t in cfg.tokens]
        self.secret = cfg.hmac_secret
        self.enabled = cfg.enabled

    def check(self, token: str | None, now: float | None = None) -> float:
        """Expiry (Unix seconds; ``inf`` for a static token) of an accepted token."""
        if not self.enabled:
            return math.inf
        if not token:
            raise AuthError("token required")
        candidate = token.encode()
        # Compare with every static token (no early exit: timing tells nothing).
        if sum(hmac.compare_digest(candidate, t) for t in self.tokens):
            return math.inf
        if self.secret is not None:
            return self._check_signed(token, time.time() if now is None else now)
        raise AuthError("invalid token")

    def _check_signed(self, token: str, now: float) -> float:
        parts = token.split(".")
        if len(parts) != 3 or not _SUBJECT_RE.match(parts[0]) or not parts[1].isdigit():
            raise AuthError("invalid token")
        subject, expires, signature = parts
        assert self.secret is not None
        expected = _signature(self.secret, f"{subject}.{expires}")
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise AuthError("invalid token")
        if int(expires) <= now:
            raise AuthError("token expired")
        return float(expires)


class RateLimiter:
    """Token bucket: ``rate`` messages per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
