"""API-equivalent prices of Claude models and the cost of one request at them (pure).

One table, :data:`PRICES`: USD per million tokens for base input, output, cache writes with the
5-minute and the 1-hour TTL, and cache reads, per model id prefix, each row with the page it was read
from and the date (``docs/protocol.md §8``). The cache prices follow the multipliers of the pricing
page's "Prompt caching" section (5-minute write 1.25×, 1-hour write 2×, read 0.1× base input), except
where a row says otherwise (Claude Fable 5.1 reads at 0.025×).

A model is matched to the longest prefix that fits it (:func:`price_for`). A built-in prefix fits a
model id that is the prefix itself or the prefix plus a date or variant suffix (``-20250514``,
``-latest``, ``[1m]``), so a newer model (``claude-opus-4-9``) never borrows an older one's price: it
is *unpriced*, and counted as such, never guessed. Prefixes from ``config.toml``
(``[pricing."prefix"]``, :mod:`shunt_lib.pricing_config`) fit any id that starts with them and win
over a built-in prefix of the same length.
"""

from __future__ import annotations

import re
from typing import Mapping, NamedTuple

PRICING_URL = "https://platform.claude.com/docs/en/about-claude/pricing"
READ_ON = "2026-12-03"
PRICE_KEYS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


class Price(NamedTuple):
    """One model's list prices in USD per million tokens, with where and when they were read."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    source: str = PRICING_URL
    read_on: str = READ_ON


def _p(inp: float, out: float, w5: float, w1: float, read: float) -> Price:
    return Price(inp, out, w5, w1, read)


# Claude model ids (https://platform.claude.com/docs/en/about-claude/models/overview) -> the pricing
# page's row for that model, read on READ_ON from PRICING_URL.
PRICES: dict[str, Price] = {
    "claude-fable-5-1": _p(10, 50, 12.50, 20, 0.25),     # Claude Fable 5.1 (cache hits 0.025x)
    "claude-fable-5": _p(10, 50, 12.50, 20, 1),          # Claude Fable 5
    "claude-opus-5": _p(5, 25, 6.25, 10, 0.50),          # Claude Opus 5
    "claude-opus-4-8": _p(5, 25, 6.25, 10, 0.50),        # Claude Opus 4.8
    "claude-opus-4-7": _p(5, 25, 6.25, 10, 0.50),        # Claude Opus 4.7
    "claude-opus-4-6": _p(5, 25, 6.25, 10, 0.50),        # Claude Opus 4.6
    "claude-opus-4-5": _p(5, 25, 6.25, 10, 0.50),        # Claude Opus 4.5
    "claude-opus-4-1": _p(15, 75, 18.75, 30, 1.50),      # Claude Opus 4.1
    "claude-opus-4-0": _p(15, 75, 18.75, 30, 1.50),      # Claude Opus 4 (alias)
    "claude-opus-4": _p(15, 75, 18.75, 30, 1.50),        # Claude Opus 4 (claude-opus-4-20250514)
    "claude-sonnet-4-6": _p(3, 15, 3.75, 6, 0.30),       # Claude Sonnet 4.6
    "claude-sonnet-4-5": _p(3, 15, 3.75, 6, 0.30),       # Claude Sonnet 4.5
    "claude-sonnet-4-0": _p(3, 15, 3.75, 6, 0.30),       # Claude Sonnet 4 (alias)
    "claude-sonnet-4": _p(3, 15, 3.75, 6, 0.30),         # Claude Sonnet 4 (claude-sonnet-4-20250514)
    "claude-3-7-sonnet": _p(3, 15, 3.75, 6, 0.30),       # Claude Sonnet 3.7
    "claude-haiku-4-5": _p(1, 5, 1.25, 2, 0.10),         # Claude Haiku 4.5
    "claude-3-5-haiku": _p(0.80, 4, 1, 1.6, 0.08),       # Claude Haiku 3.5
    "claude-3-opus": _p(15, 75, 18.75, 30, 1.50),        # Claude Opus 3
    "claude-3-haiku": _p(0.25, 1.25, 0.30, 0.50, 0.03),  # Claude Haiku 3
}

_SUFFIX_RE = re.compile(r"(?:-\d{8}|-latest)?(?:\[[^\]]{1,16}\])?")
PER_TOKENS = 1_000_000


def price_for(model: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of ``model`` (an id as the answer or request named it), or None: unpriced.

    The longest fitting prefix wins; an override (``config.toml``) fits any id starting with it and
    beats a built-in prefix of the same length; a built-in prefix fits only itself plus a date or
    variant suffix (see the module docstring).
    """
    best: tuple[int, int, Price] | None = None
    for prefix, price in (overrides or {}).items():
        if prefix and model.startswith(prefix) and (best is None or (len(prefix), 1) > best[:2]):
            best = (len(prefix), 1, price)
    for prefix, price in PRICES.items():
        if model.startswith(prefix) and _SUFFIX_RE.fullmatch(model, len(prefix)):
            if best is None or (len(prefix), 0) > best[:2]:
                best = (len(prefix), 0, price)
    return best[2] if best else None


def cost_usd(price: Price, tokens: Mapping[str, int]) -> float:
    """USD a request's ``tokens`` would cost at ``price``.

    :param tokens: a :class:`~shunt_lib.record.RequestRecord` or usage mapping: ``input_tokens``,
        ``output_tokens``, ``cache_read_tokens``, ``cache_creation_tokens`` (the total of cache
        writes) and, when the answer split it (``usage.cache_creation``, docs/protocol.md §5.2),
        ``cache_write_5m_tokens`` and ``cache_write_1h_tokens``. Cache writes not accounted for by the
        split are priced at the 5-minute rate (the API's default TTL), so an answer that reports only
        the total is priced as 5-minute writes. Missing keys count as 0.
    """
    total_w = tokens.get("cache_creation_tokens", 0)
    w1 = tokens.get("cache_write_1h_tokens", 0)
    w5 = max(tokens.get("cache_write_5m_tokens", 0), total_w - w1)
    return (tokens.get("input_tokens", 0) * price.input + tokens.get("output_tokens", 0) * price.output
            + w5 * price.cache_write_5m + w1 * price.cache_write_1h
            + tokens.get("cache_read_tokens", 0) * price.cache_read) / PER_TOKENS


class PriceBook:
    """The prices in use: :data:`PRICES` with ``overrides`` (``[pricing]`` of config.toml), each model's
    lookup (:func:`price_for`) remembered, since a pool sees few models and prices every request.
    Replace the book to change the overrides; a book is safe to share between threads."""

    MAX_MODELS = 256  # models remembered; past that the memory starts again (clients choose model names)

    def __init__(self, overrides: Mapping[str, Price] | None = None):
        self.overrides: dict[str, Price] = dict(overrides or {})
        self._known: dict[str, Price | None] = {}

    def price(self, model: str) -> Price | None:
        """The price of ``model``, or None: unpriced (see :func:`price_for`)."""
        try:
            return self._known[model]
        except KeyError:
            pass
        if len(self._known) >= self.MAX_MODELS:
            self._known = {}
        found = self._known[model] = price_for(model, self.overrides)
        return found

    def __len__(self) -> int:
        """How many models' lookups are remembered."""
        return len(self._known)

    def cost_usd(self, record: Mapping) -> float | None:
        """API-equivalent USD of one finished request (see :func:`request_cost_usd`), or None if unpriced."""
        price = self.price(str(record.get("model") or ""))
        return None if price is None else cost_usd(price, record)


def request_cost_usd(record: Mapping, overrides: Mapping[str, Price] | None = None) -> float | None:
    """API-equivalent USD of one finished request (its ``model`` and tokens), or None if the model
    is unpriced (:func:`price_for`)."""
    price = price_for(str(record.get("model") or ""), overrides)
    return None if price is None else cost_usd(price, record)
