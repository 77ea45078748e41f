"""Venue name -> parser class and live protocol."""

from __future__ import annotations

from candlewax.symbols import SymbolMap
from sources import binance, bybit, coinbase, hyperliquid, kraken, okx
from sources.venue import Parser, VenueProtocol

PARSERS: dict[str, type[Parser]] = {
    "binance": binance.PARSER,
    "binance-usdm": binance.USDM_PARSER,
    "okx": okx.PARSER,
    "bybit": bybit.PARSER,
    "kraken": kraken.PARSER,
    "hyperliquid": hyperliquid.PARSER,
    "coinbase": coinbase.PARSER,
}
PROTOCOLS: dict[str, VenueProtocol] = {
    "binance": binance.PROTOCOL,
    "binance-usdm": binance.USDM_PROTOCOL,
    "okx": okx.PROTOCOL,
    "bybit": bybit.PROTOCOL,
    "kraken": kraken.PROTOCOL,
    "hyperliquid": hyperliquid.PROTOCOL,
    "coinbase": coinbase.PROTOCOL,
}


class UnsupportedVenue(ValueError):
    pass


def _check(venue: str) -> None:
    if venue not in PARSERS:
        raise UnsupportedVenue(
            f"unsupported venue {venue!r}; supported: {', '.join(sorted(PARSERS))}"
        )


def make_parser(venue: str, symbols: list[str] | None = None) -> Parser:
    """A parser for ``venue`` whose symbol map is seeded with the configured unified symbols."""
    _check(venue)
    return PARSERS[venue](SymbolMap(venue, symbols))


def protocol(venue: str) -> VenueProtocol:
    _check(venue)
    return PROTOCOLS[venue]
