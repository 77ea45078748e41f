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
