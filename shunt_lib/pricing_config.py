"""The ``[pricing."model-prefix"]`` tables of ``config.toml``: price overrides (pure).

Each table names a model id prefix and gives all five prices in USD per million tokens::

    [pricing."claude-sonnet-5"]
    input = 2.0
    output = 10.0
    cache_write_5m = 2.5
    cache_write_1h = 4.0
    cache_read = 0.2

An override fits any model id starting with its prefix (:func:`shunt_lib.pricing.price_for`).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError
from .pricing import PRICE_KEYS, Price

MAX_PRICE = 1_000_000.0  # USD per million tokens; anything above is a typo


def parse_pricing(raw: Any) -> dict[str, Price]:
    """Validate the ``pricing`` table of a parsed ``config.toml`` into ``{prefix: Price}``.

    :raises ConfigError: naming the key, when ``pricing`` or an entry is not a table, a prefix is
        empty or over 200 characters, a key is unknown or missing, or a price is not a finite number
        from 0 to :data:`MAX_PRICE`.
    """
    if not isinstance(raw, dict):
        raise ConfigError("config.toml: pricing must be a table of [pricing.\"model-prefix\"] tables")
    out: dict[str, Price] = {}
    for prefix, entry in raw.items():
        where = f"pricing.{prefix!r}"
        if not prefix or len(prefix) > 200:
            raise ConfigError(f"config.toml: {where}: the model prefix must be 1-200 characters")
        if not isinstance(entry, dict):
            raise ConfigError(f"config.toml: {where} must be a table with keys {', '.join(PRICE_KEYS)}")
        for key in entry:
            if key not in PRICE_KEYS:
                raise ConfigError(f"config.toml: unknown key {where}.{key} (known: {', '.join(PRICE_KEYS)})")
        missing = [k for k in PRICE_KEYS if k not in entry]
        if missing:
            raise ConfigError(f"config.toml: {where} lacks {', '.join(missing)}")
        values = {}
        for key in PRICE_KEYS:
            v = entry[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not 0 <= v <= MAX_PRICE:
                raise ConfigError(f"config.toml: {where}.{key} must be a number of USD per million tokens "
                                  f"from 0 to {MAX_PRICE:g} (got {v!r})")
            values[key] = float(v)
        out[prefix] = Price(**values, source="config.toml", read_on="")
    return out
