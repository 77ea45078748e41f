"""ccxt-style unified symbols <-> each venue's native instrument names."""

from __future__ import annotations

from candlewax.schema import SYMBOL_RE

# Quote assets tried (longest first) when a native Binance name must be split
# without exchange metadata, e.g. in a replay of a capture.
_BINANCE_QUOTES = sorted(
    [
        "USDT",
        "USDC",
        "FDUSD",
        "BUSD",
        "TUSD",
        "DAI",
        "BTC",
        "ETH",
        "BNB",
        "EUR",
        "GBP",
        "TRY",
        "BRL",
        "AUD",
        "JPY",
        "RUB",
        "UAH",
        "ZAR",
        "PLN",
        "RON",
        "ARS",
        "MXN",
        "IDR",
        "NGN",
        "COP",
        "XRP",
        "DOGE",
        "TRX",
        "DOT",
        "USDP",
        "AEUR",
        "EURI",
    ],
    key=len,
    reverse=True,
)


# Bybit's linear market (/v5/public/linear): the same native names as spot, mapped to
# perpetuals (BTCUSDT -> BTC/USDT:USDT). Not a venue of its own: the bybit parser keeps
# one SymbolMap per market and picks it by the connection's endpoint.
BYBIT_LINEAR = "bybit:linear"
# Kraken's legacy asset codes (WebSocket v1, REST) -> the unified (and v2) names.
_KRAKEN_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}


class SymbolError(ValueError):
    pass


def check_unified(symbol: str) -> str:
    if not SYMBOL_RE.match(symbol):
        raise SymbolError(
            f"malformed symbol {symbol!r}: expected ccxt unified form like 'BTC/USDT' "
            "or 'BTC/USDT:USDT' for a perpetual"
        )
    return symbol


def split_unified(symbol: str) -> tuple[str, str, str | None, str | None]:
    """'BTC/USD:BTC-220527' -> ('BTC', 'USD', 'BTC', '220527')."""
    check_unified(symbol)
    pair, _, rest = symbol.partition(":")
    base, quote = pair.split("/")
    settle: str | None = None
    suffix: str | None = None
    if rest:
        settle, _, tail = rest.partition("-")
        suffix = tail or None
    return base, quote, settle, suffix


def to_native(venue: str, symbol: str) -> str:
    """Unified symbol -> the venue's instrument name used in subscriptions."""
    base, quote, settle, suffix = split_unified(symbol)
    if venue in ("binance", "binance-usdm"):
        if suffix:
            raise SymbolError(f"{venue}: dated contracts are not supported ({symbol})")
        if venue == "binance" and settle:
            raise SymbolError(f"binance spot has no perpetual {symbol!r}; use venue binance-usdm")
        if venue == "binance-usdm" and not settle:
            raise SymbolError(f"binance-usdm trades perpetuals: write {base}/{quote}:{quote}")
        return f"{base}{quote}"
    if venue == "okx":
        if settle is None:
            return f"{base}-{quote}"
        if suffix is None:
            return f"{base}-{quote}-SWAP"
        return f"{base}-{quote}-{suffix}"
    if venue == "coinbase":
        if settle:
            raise SymbolError(
                f"coinbase market data is spot only: write {base}/{quote}, not {symbol}"
            )
        if quote == "USDC":
            # Advanced Trade serves -USDC market data as the -USD product (§2.1).
            raise SymbolError(
                f"coinbase sends {base}-USDC market data as {base}-USD: write {base}/USD"
            )
        return f"{base}-{quote}"
    if venue == "kraken":
        return f"{base}/{quote}"
    if venue in ("bybit", BYBIT_LINEAR):
        # One name per pair in both markets (BTCUSDT): the market comes from the endpoint.
        if suffix:
            raise SymbolError(f"bybit: dated contracts are not supported ({symbol})")
        if settle is not None and settle != quote:
            raise SymbolError(
                f"bybit: inverse contracts are not supported ({symbol}); "
                f"a linear perpetual settles in its quote: {base}/{quote}:{quote}"
            )
        return f"{base}{quote}"
    if venue == "hyperliquid":
        if quote != "USDC" or settle != "USDC" or suffix:
            raise SymbolError(f"hyperliquid lists USDC perpetuals only: write {base}/USDC:USDC")
        return base
    raise SymbolError(f"unknown venue {venue!r}")


def from_native(venue: str, native: str) -> str:
    """The venue's instrument name -> unified symbol (SymbolError if it cannot be mapped)."""
    try:
        return check_unified(_unified_of(venue, native))
    except (IndexError, ValueError) as exc:  # SymbolError is a ValueError
        raise SymbolError(f"{venue}: cannot map instrument {native!r}: {exc}") from None


def _unified_of(venue: str, native: str) -> str:
    if venue in ("binance", "binance-usdm"):
        upper = native.upper()
        for quote in _BINANCE_QUOTES:
            if upper.endswith(quote) and len(upper) > len(quote):
                base = upper[: -len(quote)]
                return f"{base}/{quote}:{quote}" if venue == "binance-usdm" else f"{base}/{quote}"
        raise SymbolError(f"{venue}: cannot split {native!r} into base and quote")
    if venue == "okx":
        parts = native.split("-")
        if len(parts) == 2:
            return f"{parts[0]}/{parts[1]}"
        base, quote = parts[0], parts[1]
        settle = quote if quote in ("USDT", "USDC") else base
        if parts[2] == "SWAP" and len(parts) == 3:
            return f"{base}/{quote}:{settle}"
        return f"{base}/{quote}:{settle}-" + "-".join(parts[2:])
    if venue == "coinbase":
        base, quote = native.split("-")
        return f"{base}/{quote}"
    if venue == "kraken":
        # v2 names are unified already; v1 (the bundled capture) still says XBT and XDG.
        base, quote = native.split("/")
        return f"{_KRAKEN_ASSETS.get(base, base)}/{_KRAKEN_ASSETS.get(quote, quote)}"
    if venue in ("bybit", BYBIT_LINEAR):
        spot = _unified_of("binance", native)  # same BASEQUOTE spelling, same quote list
        if venue == "bybit":
            return spot
        quote = spot.partition("/")[2]
        return f"{spot}:{quote}"
    if venue == "hyperliquid":
        return f"{native}/USDC:USDC"  # coin names keep their case (kPEPE)
    raise SymbolError(f"unknown venue {venue!r}")


class SymbolMap:
    """Caches native -> unified, seeded with the configured symbols so that
    configured names never depend on the quote-suffix heuristic."""

    def __init__(self, venue: str, unified: list[str] | None = None) -> None:
        self.venue = venue
        self.configured: tuple[str, ...] = tuple(unified or [])
        self._cache: dict[str, str] = {}
        for symbol in unified or []:
            self._cache[to_native(venue, symbol).upper()] = symbol

    def unified(self, native: str) -> str:
        key = native.upper()
        found = self._cache.get(key)
        if found is None:
            found = from_native(self.venue, native)
            self._cache[key] = found
        return found
