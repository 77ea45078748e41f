"""The simulator's venues: venue name -> the ``VenueSim`` module that speaks it.

Adding a venue: one module beside these (a ``VenueSim`` subclass) and one line in
``_MODULES`` below; docs/simulator.md ("Adding a venue") lists the hooks.
"""

from __future__ import annotations

from collections.abc import Mapping

from simulator.venues.base import ClientPort, MarketAt, RestReply, VenueSim
from simulator.venues.binance import BinanceSim
from simulator.venues.bybit import BybitSim
from simulator.venues.coinbase import CoinbaseSim
from simulator.venues.hyperliquid import HyperliquidSim
from simulator.venues.kraken import KrakenSim
from simulator.venues.okx import OkxSim

__all__ = [
    "ClientPort",
    "MarketAt",
    "RestReply",
    "VenueSim",
    "venue_classes",
    "venue_names",
    "venue_sim",
]

_MODULES: tuple[type[VenueSim], ...] = (
    BinanceSim,
    OkxSim,
    BybitSim,
    KrakenSim,
    HyperliquidSim,
    CoinbaseSim,
)

REGISTRY: dict[str, type[VenueSim]] = {name: cls for cls in _MODULES for name in cls.names}


def venue_names() -> tuple[str, ...]:
    """Every venue the simulator speaks, in registry order (the CLI's --venue choices)."""
    return tuple(REGISTRY)


def venue_classes() -> tuple[type[VenueSim], ...]:
    return _MODULES


def venue_sim(venue: str, options: Mapping[str, object] | None = None) -> VenueSim:
    """The ``VenueSim`` of ``venue``; a ValueError naming the venues it speaks otherwise."""
    cls = REGISTRY.get(venue)
    if cls is None:
        names = venue_names()
        spoken = f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]
        raise ValueError(f"the simulator speaks {spoken}, not {venue!r}")
    return cls(venue, options)
