"""User operators loaded by import path in test_user_operator.py."""

from __future__ import annotations

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
