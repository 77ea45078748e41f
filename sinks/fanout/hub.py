"""Subscriptions, routing and dispatch: the core of the fan-out server.

Runs entirely on the server's event loop (the sink thread hands batches over
with ``call_soon_threadsafe``), so no locks: subscribing, snapshotting and
dispatching never interleave. Clients with identical subscription sets share
a ``Group``. Each record is encoded and framed once (once per book depth asked
for); a group's records of one loop iteration become one byte string that every
member gets as is, written straight to its socket when it keeps up.

Writes: dispatching only appends a group's framed messages to the group; the
first dispatch of an iteration schedules one write pass for the next one, which
joins each group's messages once and hands them to every member with one
``transport.write`` (:meth:`Outbox.put`). So the work per client is one call and
one socket write per iteration with data for it, however many batches arrived,
and none at all per record. Anything written to one client in between (a reply,
a snapshot, a pong, a membership change) first writes out what the groups hold,
so every client sees messages in the order they were published.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from candlewax import metrics
from candlewax.client.protocol import ALL_CHANNELS, DEFAULT_CHANNELS, PROTOCOL_VERSION
from candlewax.config import WebsocketSink
from candlewax.schema import now_us
from sinks.fanout.outbox import Outbox
from sinks.fanout.requests import Filter, Ping, Request, RequestError, Subscribe, Unsubscribe
from sinks.fanout.routing import FULL, RAW, RouteKey, depth_for, route_key, truncate_book
from sinks.fanout.state import LatestState
from sinks.fanout.wire import control_frame, encode, text_frame
from sources.frames import RawFrame

Record = dict[str, Any]
FrameItem = tuple[RawFrame, str | None]
SubId = str | int
AS_IS = -1  # a record's payload not cut to a smaller book depth


GroupKey = tuple[frozenset[Filter], bool]


class Group:
    """Clients subscribed to exactly the same set of filters, wanting the same shape
    (``arrays``: the records of one dispatch as one JSON array message)."""

    def __init__(self, filters: frozenset[Filter], arrays: bool) -> None:
        self.filters = filters
        self.arrays = arrays
        self.key: GroupKey = (filters, arrays)
        self.members: list[Outbox] = []
        # (framed messages, how many) per dispatch, not yet handed to the members
        self.pending: list[tuple[bytes, int]] = []


class Client:
    _ids = itertools.count(1)

    def __init__(self, outbox: Outbox, arrays: bool = False) -> None:
        self.id = next(Client._ids)
        self.outbox = outbox
        self.arrays = arrays  # asked for ?arrays=1: one JSON array per dispatch
        self.subs: dict[SubId, Filter] = {}
        self.group: Group | None = None
        self._auto = itertools.count(1)

    def new_sub_id(self) -> int:
        while True:
            candidate = next(self._auto)
            if candidate not in self.subs:
                return candidate


class Hub:
    def __init__(self, cfg: WebsocketSink, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.loop = loop
        self.clients: dict[int, Client] = {}
        self.groups: dict[GroupKey, Group] = {}
        self.routes: dict[RouteKey, list[tuple[Group, int]]] = {}
        self.state = LatestState()
        self.started = time.monotonic()
        self.batch_s = cfg.batch_ms / 1000.0
        self.encode_errors = 0
        self._pending: list[Record] = []
        self._pending_frames: list[FrameItem] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._unwritten: list[Outbox] = []  # outboxes with bytes put this iteration
        self._loaded: list[Group] = []  # groups with pending messages
        self._write_scheduled = False
        self._reported = {"sent": 0, "dropped": 0, "queued": 0, "clients": 0, "subs": 0}
        self._gone_sent = 0  # messages sent to clients that have left
        self._gone_dropped = 0

    # ---- input (called on the loop) ----

    def ingest(self, records: list[Record]) -> None:
        if self.batch_s > 0:
            self._pending.extend(records)
            self._schedule()
        else:
            self._dispatch(records, ())

    def ingest_frames(self, items: list[FrameItem]) -> None:
        if self.batch_s > 0:
            self._pending_frames.extend(items)
            self._schedule()
        else:
            self._dispatch((), items)

    def flush(self) -> None:
        """Send whatever batching holds now (before a snapshot, a pong, a stop)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._pending or self._pending_frames:
            records, frames = self._pending, self._pending_frames
            self._pending, self._pending_frames = [], []
            self._dispatch(records, frames)

    def mark_pending(self, outbox: Outbox) -> None:
        """An outbox got bytes it could not write at once: flush it in the write pass."""
        self._schedule_write()
        self._unwritten.append(outbox)

    def _schedule_write(self) -> None:
        if not self._write_scheduled:
            self._write_scheduled = True
            self.loop.call_soon(self._write_pending)

    def _write_pending(self) -> None:
        self._write_scheduled = False
        self.write_groups()
        unwritten, self._unwritten = self._unwritten, []
        for outbox in unwritten:
            outbox.flush()

    def write_groups(self) -> None:
        """Hand every group's pending messages to its members: joined once per group,
        one ``Outbox.put`` (one socket write while the client keeps up) per member."""
        loaded, self._loaded = self._loaded, []
        for group in loaded:
            pieces, group.pending = group.pending, []
            if len(pieces) == 1:
                frames, count = pieces[0]
            else:
                frames = b"".join(piece for piece, _ in pieces)
                count = sum(n for _, n in pieces)
            for outbox in group.members:
                outbox.put(frames, count, pieces)

    def _control(self, outbox: Outbox, message: dict[str, Any]) -> None:
        """A control message for one client, after every data message published before it."""
        if self._loaded:
            self.write_groups()
        outbox.put_control(control_frame(message))

    def _schedule(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_later(self.batch_s, self.flush)

    # ---- dispatch ----

    def _dispatch(self, records: Any, frames: Any) -> None:
        if records:
            self.state.update(records)
        if not self.groups:
            return
        out: dict[Group, list[bytes]] = {}
        routes = self.routes
        framed = self.batch_s == 0  # framed payloads for groups that get one record a message
        for record in records:
            key = route_key(record)
            if key is None:
                continue
            targets = routes.get(key)
            if targets is None:
                targets = self._route(key)
            if not targets:
                continue
            try:
                self._add(out, record, targets, framed)
            except (TypeError, KeyError, ValueError):  # breaks the contract: count, skip
                self.encode_errors += 1
        for frame, symbol in frames:
            targets = routes.get((RAW, frame.venue, symbol))
            if targets is None:
                targets = self._route((RAW, frame.venue, symbol))
            if targets:
                payload = encode(_raw_message(frame, symbol))
                framed_payload = text_frame(payload) if framed else payload
                for group, _ in targets:
                    chosen = payload if group.arrays else framed_payload
                    out.setdefault(group, []).append(chosen)
        for group, payloads in out.items():
            self._send(group, payloads)

    @staticmethod
    def _add(out: dict[Group, list[bytes]], record: Record, targets: Any, framed: bool) -> None:
        """Each record is encoded once per book depth asked for, and framed once if some
        group takes it as a message of its own."""
        encoded: dict[int, bytes] = {}  # by the depth it was cut to (AS_IS: not cut)
        frames: dict[int, bytes] = {}
        is_book = record["type"] == "book"
        for group, depth in targets:
            cut = depth if is_book and depth != FULL and depth < record["depth"] else AS_IS
            payload = encoded.get(cut)
            if payload is None:
                payload = encode(record if cut == AS_IS else truncate_book(record, cut))
                encoded[cut] = payload
            if framed and not group.arrays:
                frame = frames.get(cut)
                if frame is None:
                    frame = frames[cut] = text_frame(payload)
                payload = frame
            bucket = out.get(group)
            if bucket is None:
                out[group] = [payload]
            else:
                bucket.append(payload)

    def _send(self, group: Group, payloads: list[bytes]) -> None:
        """Queue one dispatch's messages for a group (written in the write pass)."""
        if self.batch_s > 0 or group.arrays:
            size = self.cfg.batch_max
            frames = b"".join(
                text_frame(b"[" + b",".join(payloads[i : i + size]) + b"]")
                for i in range(0, len(payloads), size)
            )
        else:
            frames = b"".join(payloads)
        if not group.pending:
            self._loaded.append(group)
            self._schedule_write()
        group.pending.append((frames, len(payloads)))

    def _route(self, key: RouteKey) -> list[tuple[Group, int]]:
        targets = []
        for group in self.groups.values():
            depth = depth_for(group.filters, key)
            if depth is not None:
                targets.append((group, depth))
        self.routes[key] = targets
        return targets

    # ---- clients ----

    def connect(self, outbox: Outbox, arrays: bool = False) -> Client:
        client = Client(outbox, arrays)
        self.clients[client.id] = client
        hello = {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "heartbeat_s": self.cfg.heartbeat_s,
            "channels": list(ALL_CHANNELS),
            "default_channels": list(DEFAULT_CHANNELS),
            "raw": self.cfg.raw,
        }
        self._control(outbox, hello)
        return client

    def disconnect(self, client: Client) -> None:
        if self.clients.pop(client.id, None) is None:
            return
        client.subs.clear()
        self._regroup(client)
        self._gone_sent += client.outbox.sent
        self._gone_dropped += client.outbox.dropped_total
        client.outbox.close()

    def handle(self, client: Client, request: Request) -> None:
        try:
            if isinstance(request, Subscribe):
                self._subscribe(client, request)
            elif isinstance(request, Unsubscribe):
                self._unsubscribe(client, request)
            elif isinstance(request, Ping):
                self.flush()  # the pong comes after everything published before the ping
                pong = {"type": "pong", "ts": now_us(), "id": request.id}
                self._control(client.outbox, pong)
        except RequestError as exc:
            self.error(client, exc)

    def error(self, client: Client, exc: RequestError, kind: str = "invalid") -> None:
        metrics.WS_CLIENT_ERRORS.labels(kind).inc()
        message = {"type": "error", "reason": exc.reason, "id": exc.request_id}
        self._control(client.outbox, message)

    def _subscribe(self, client: Client, request: Subscribe) -> None:
        flt = request.filter
        if len(client.subs) >= self.cfg.max_subscriptions:
            raise RequestError(
                f"at most {self.cfg.max_subscriptions} subscriptions per connection", request.id
            )
        if flt.raw and not self.cfg.raw:
            raise RequestError("raw frames are not enabled on this server", request.id)
        sub_id = request.id if request.id is not None else client.new_sub_id()
        if sub_id in client.subs:
            raise RequestError(f"subscription id {sub_id!r} is already in use", request.id)
        self.flush()  # the snapshot must cover exactly what was sent before it
        client.subs[sub_id] = flt
        self._regroup(client)
        reply = {"type": "subscribed", "id": sub_id, **flt.echo()}
        self._control(client.outbox, reply)
        snapshot = {"type": "snapshot", "id": sub_id, "records": self.state.snapshot(flt)}
        self._control(client.outbox, snapshot)

    def _unsubscribe(self, client: Client, request: Unsubscribe) -> None:
        if request.id is None:
            ids = list(client.subs)
        elif request.id in client.subs:
            ids = [request.id]
        else:
            raise RequestError(f"no subscription with id {request.id!r}", request.id)
        for sub_id in ids:
            del client.subs[sub_id]
        self._regroup(client)
        self._control(client.outbox, {"type": "unsubscribed", "ids": ids})

    def _regroup(self, client: Client) -> None:
        if self._loaded:  # what the groups hold goes to their members as of publishing
            self.write_groups()
        old = client.group
        if old is not None:
            old.members.remove(client.outbox)
            if not old.members:
                del self.groups[old.key]
                self.routes.clear()
        client.group = None
        if not client.subs:
            return
        key = (frozenset(client.subs.values()), client.arrays)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(*key)
            self.routes.clear()
        group.members.append(client.outbox)
        client.group = group

    # ---- status ----

    def subscriptions(self) -> int:
        return sum(len(c.subs) for c in self.clients.values())

    def dropped(self) -> int:
        return self._gone_dropped + sum(c.outbox.dropped_total for c in self.clients.values())

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "clients": len(self.clients),
            "active_subscriptions": self.subscriptions(),
            "messages_per_second": self.state.total.rate(now),
            "records": self.state.records,
            "dropped": self.dropped(),
            "skipped_records": self.encode_errors,  # off the contract: not sent
            "exchange_status": {
                venue: stats.as_dict(now) for venue, stats in sorted(self.state.venues.items())
            },
        }

    def heartbeat(self) -> None:
        status = self.status()
        message = {
            "type": "heartbeat",
            "ts": now_us(),
            "uptime_s": status["uptime_s"],
            "clients": status["clients"],
            "messages_per_second": status["messages_per_second"],
            "exchanges": status["exchange_status"],
        }
        frames = control_frame(message)
        if self._loaded:
            self.write_groups()
        for client in self.clients.values():
            client.outbox.put(frames, 1)  # droppable: only the latest one matters

    def report_metrics(self) -> None:
        """Move this hub's counts into the process-wide Prometheus metrics (deltas, so
        several servers in one process add up)."""
        live = self.clients.values()
        now = {
            "sent": self._gone_sent + sum(c.outbox.sent for c in live),
            "dropped": self.dropped(),
            "queued": sum(c.outbox.queued for c in live),
            "clients": len(self.clients),
            "subs": self.subscriptions(),
        }
        before = self._reported
        metrics.WS_SENT.inc(now["sent"] - before["sent"])
        metrics.WS_DROPPED.inc(now["dropped"] - before["dropped"])
        metrics.WS_QUEUED.inc(now["queued"] - before["queued"])
        metrics.WS_CLIENTS.inc(now["clients"] - before["clients"])
        metrics.WS_SUBSCRIPTIONS.inc(now["subs"] - before["subs"])
        self._reported = now

    def forget_metrics(self) -> None:
        """Take this hub's gauges out of the process totals (server stopped)."""
        before = self._reported
        metrics.WS_QUEUED.dec(before["queued"])
        metrics.WS_CLIENTS.dec(before["clients"])
        metrics.WS_SUBSCRIPTIONS.dec(before["subs"])
        self._reported = {**before, "queued": 0, "clients": 0, "subs": 0}


def _raw_message(frame: RawFrame, symbol: str | None) -> dict[str, Any]:
    return {
        "type": "raw",
        "venue": frame.venue,
        "symbol": symbol,
        "conn_id": frame.conn_id,
        "ts_ingest": frame.ts_ingest,
        "hint": frame.hint,
        "data": frame.text,
    }
