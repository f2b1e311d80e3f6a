"""Pricing: the table per model family with cache reads and both cache-write TTLs, prefix matching,
unpriced models, and the [pricing."prefix"] overrides of config.toml."""

import pytest

from shunt_lib.config import load_config, Paths, parse_config
from shunt_lib.errors import ConfigError
from shunt_lib.pricing import PRICES, Price, cost_usd, price_for, request_cost_usd

M = 1_000_000
ALL = {"input_tokens": M, "output_tokens": M, "cache_read_tokens": M, "cache_creation_tokens": 2 * M,
       "cache_write_5m_tokens": M, "cache_write_1h_tokens": M}


@pytest.mark.parametrize("model, usd", [
    # input + output + 5m write + 1h write + read, one million tokens each
    ("claude-opus-4-5-20251101", 5 + 25 + 6.25 + 10 + 0.50),
    ("claude-opus-4-1-20250805", 15 + 75 + 18.75 + 30 + 1.50),
    ("claude-opus-4-20250514", 15 + 75 + 18.75 + 30 + 1.50),
    ("claude-sonnet-4-5-20250929", 3 + 15 + 3.75 + 6 + 0.30),
    ("claude-sonnet-4-20250514", 3 + 15 + 3.75 + 6 + 0.30),
    ("claude-3-7-sonnet-latest", 3 + 15 + 3.75 + 6 + 0.30),
    ("claude-haiku-4-5", 1 + 5 + 1.25 + 2 + 0.10),
    ("claude-3-5-haiku-20241022", 0.80 + 4 + 1 + 1.6 + 0.08),
    ("claude-3-haiku-20240307", 0.25 + 1.25 + 0.30 + 0.50 + 0.03),
    ("claude-opus-5", 5 + 25 + 6.25 + 10 + 0.50),
])
def test_each_family_priced_with_cache_reads_and_both_write_ttls(model, usd):
    assert request_cost_usd({"model": model, **ALL}) == pytest.approx(usd)


def test_cache_multipliers_hold_for_every_row_but_the_documented_exception():
    for prefix, p in PRICES.items():
        assert p.source.startswith("https://") and p.read_on
        if prefix == "claude-3-haiku":  # the page rounds Haiku 3's: $0.30 5m write, $0.03 read
            continue
        assert p.cache_write_5m == pytest.approx(1.25 * p.input), prefix
        assert p.cache_write_1h == pytest.approx(2 * p.input), prefix
        if prefix != "claude-fable-5-1":  # the pricing page: 0.025x for Fable 5.1
            assert p.cache_read == pytest.approx(0.1 * p.input), prefix


def test_writes_split_by_ttl_and_total_only_priced_as_5m():
    p = price_for("claude-sonnet-4-5")
    split = {"cache_creation_tokens": 3 * M, "cache_write_5m_tokens": M, "cache_write_1h_tokens": 2 * M}
    assert cost_usd(p, split) == pytest.approx(3.75 + 12)
    assert cost_usd(p, {"cache_creation_tokens": 3 * M}) == pytest.approx(3 * 3.75)
    assert cost_usd(p, {}) == 0


def test_longest_prefix_wins_and_new_models_are_unpriced_not_guessed():
    assert price_for("claude-opus-4-1") == PRICES["claude-opus-4-1"]
    assert price_for("claude-opus-4-5[1m]") == PRICES["claude-opus-4-5"]
    assert price_for("claude-opus-4") == PRICES["claude-opus-4"]
    for model in ("claude-opus-4-9", "claude-sonnet-9", "gpt-4o", "", "claude-haiku-4-5x"):
        assert price_for(model) is None, model
        assert request_cost_usd({"model": model, **ALL}) is None


def test_overrides_fit_any_id_with_the_prefix_and_beat_builtins_of_same_length():
    mine = Price(1, 2, 3, 4, 5, "config.toml", "")
    assert price_for("claude-sonnet-9-1", {"claude-sonnet-9": mine}) is mine
    assert price_for("claude-sonnet-4-5", {"claude-sonnet-4-5": mine}) is mine
    assert price_for("claude-sonnet-4-5", {"claude-": mine}) == PRICES["claude-sonnet-4-5"]  # longer wins
    assert price_for("claude-zzz", {"claude-": mine}) is mine


GOOD = {"input": 2, "output": 10.0, "cache_write_5m": 2.5, "cache_write_1h": 4, "cache_read": 0.2}


def test_config_pricing_tables_parsed(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[pricing."claude-sonnet-5"]\ninput = 2\noutput = 10.0\n'
                                      'cache_write_5m = 2.5\ncache_write_1h = 4\ncache_read = 0.2\n')
    cfg = load_config(Paths(str(home)))
    assert cfg.pricing == {"claude-sonnet-5": Price(2.0, 10.0, 2.5, 4.0, 0.2, "config.toml", "")}
    assert request_cost_usd({"model": "claude-sonnet-5-20260101", "input_tokens": M}, cfg.pricing) == 2
    assert parse_config({}).pricing == {}


@pytest.mark.parametrize("pricing, needle", [
    ({"claude-x": {**GOOD, "cache_write": 1}}, "unknown key pricing.'claude-x'.cache_write"),
    ({"claude-x": {k: v for k, v in GOOD.items() if k != "cache_read"}}, "lacks cache_read"),
    ({"claude-x": {**GOOD, "input": "2"}}, "pricing.'claude-x'.input"),
    ({"claude-x": {**GOOD, "output": -1}}, "pricing.'claude-x'.output"),
    ({"claude-x": {**GOOD, "output": float("nan")}}, "pricing.'claude-x'.output"),
    ({"claude-x": {**GOOD, "cache_read": True}}, "pricing.'claude-x'.cache_read"),
    ({"claude-x": 3}, "pricing.'claude-x' must be a table"),
    ({"": GOOD}, "model prefix"),
    ([], "pricing must be a table"),
])
def test_bad_pricing_refused_naming_the_key(pricing, needle):
    with pytest.raises(ConfigError) as e:
        parse_config({"pricing": pricing})
    assert needle in str(e.value)


def test_a_price_book_gives_what_price_for_gives_and_remembers_each_model():
    from shunt_lib.pricing import PriceBook

    mine = Price(1, 2, 3, 4, 5, "config.toml", "")
    book = PriceBook({"my-": mine})
    for model in ("claude-sonnet-4-5-20250929", "my-model", "gpt-9", "claude-sonnet-4-5-20250929", ""):
        assert book.price(model) == price_for(model, {"my-": mine})
    assert book.cost_usd({"model": "my-model", "input_tokens": 1_000_000}) == 1.0
    assert book.cost_usd({"model": "gpt-9", "input_tokens": 5}) is None
    for i in range(PriceBook.MAX_MODELS + 10):  # clients choose model names: the memory stays bounded
        book.price(f"m{i}")
    assert 0 < len(book) <= PriceBook.MAX_MODELS
