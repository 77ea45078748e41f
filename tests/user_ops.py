"""User operators loaded by import path in test_user_operator.py."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any


def big_trades_only(record: dict[str, Any]) -> dict[str, Any] | None:
    return record if Decimal(record["size"]) >= Decimal("0.1") else None


def explode_on_one(record: dict[str, Any]) -> dict[str, Any]:
    if record["trade_id"] == "3735683259":
        raise RuntimeError("user bug")
    return record


def returns_garbage(record: dict[str, Any]) -> Any:
    if record["trade_id"] == "3735683259":
        return {"not": "a record"}
    if record["trade_id"] == "3735683260":
        return 42
    return record


def unencodable(record: dict[str, Any]) -> dict[str, Any]:
    if record["trade_id"] == "3735683259":
        return {**record, "price": {1, 2}}  # a set: no sink can encode it
    return record


# test_recovery_resume.py: the trade id at which `stop_at` asks the run to stop (Ctrl-C).
STOP_AT: str | None = None


def stop_at(record: dict[str, Any]) -> dict[str, Any]:
    if record["trade_id"] == STOP_AT:
        from flows import inputs

        inputs.STOP.set()
    return record


POISONED = ("3735683300", "3735693013")  # early, and in the last window (closed at the end)


def poison_prices(record: dict[str, Any]) -> dict[str, Any]:
    """A price no parser should let through; the flow must survive it (test_stateful_guards)."""
    if record["trade_id"] in POISONED:
        return {**record, "price": "1e400"}
    return record


def cluster_probe(record: dict[str, Any]) -> dict[str, Any]:
    """test_cluster.py, in every process of a cluster: notes which process handled which
    symbol (a file ``<pid> <symbol>`` in $CANDLEWAX_TEST_PROCESS_LOG), and at the trade
    $CANDLEWAX_TEST_KILL_AT kills its own process with SIGKILL once the recovery store at
    $CANDLEWAX_TEST_KILL_STORE has committed an epoch (so the resumed run has one to
    resume from)."""
    import os

    log_dir = os.environ.get("CANDLEWAX_TEST_PROCESS_LOG")
    if log_dir:
        name = f"{os.getpid()} {record['symbol'].replace('/', '-')}"
        if name not in _NOTED:
            _NOTED.add(name)
            open(os.path.join(log_dir, name), "w").close()
    if record["trade_id"] == os.environ.get("CANDLEWAX_TEST_KILL_AT"):
        _wait_for_commit(os.environ["CANDLEWAX_TEST_KILL_STORE"])
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    return record


_NOTED: set[str] = set()


def _wait_for_commit(store: str, limit_s: float = 120.0) -> None:
    import glob
    import sqlite3
    import time

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for path in glob.glob(os.path.join(store, "part-*.sqlite3")):
            with sqlite3.connect(path) as db:
                (epoch,) = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()
            if epoch is not None and epoch >= 2:
                return
        time.sleep(0.05)


# test_symbol_pipeline.py: the bars a run has made so far.
COLLECTED: list[dict[str, Any]] = []


def collect(record: dict[str, Any]) -> dict[str, Any]:
    COLLECTED.append(record)
    return record
