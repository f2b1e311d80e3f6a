"""``shunt token create | list | revoke | rotate``: client tokens, written to ``tokens.db`` directly
(shunt running or not; a running ``serve`` sees the change within a second). With ``[cluster]`` in
config.toml each change is also pushed to the cluster's Redis at once (:mod:`shunt_lib.cluster_tokens`).

``create`` and ``rotate`` print the token once, alone on stdout (``TOKEN=$(shunt token create --label ci)``);
everything else they say goes to stderr. Nothing prints a stored secret: there is none to print.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Callable, Iterator

from .config import Paths, load_config, shunt_home
from .errors import ConfigError
from .token_format import valid_id
from .token_input import spec_from_fields
from .token_store import TokenError, TokenStore, record_doc
from .token_usage import read_usage


def _paths() -> Paths:
    return Paths(shunt_home())


def token_usage(paths: Paths, token_ids: list[str]) -> dict[str, dict]:
    """Usage per token for ``shunt token list`` (id → ``{"column": value}``): today's (UTC) requests,
    tokens (input + output + cache writes), cache reads and API-equivalent USD, and this month's USD,
    from ``tokens.db``'s ``token_usage`` table (:func:`~shunt_lib.token_usage.read_usage`; what a
    running serve charged up to a quarter of a second ago). Tokens that never ran are left out."""
    used = read_usage(paths.tokens_db, time.time())
    return {i: {"requests_today": u.day_requests, "tokens_today": u.day_tokens,
                "cache_read_today": u.day_cache_read_tokens, "usd_today": round(u.day_cost_usd, 4),
                "usd_month": round(u.month_cost_usd, 4)} for i, u in used.items() if i in token_ids}


def _when(epoch_s: float | None, now_s: float) -> str:
    if epoch_s is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch_s))


def _limits_text(doc: dict) -> str:
    lim = doc["limits"]
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in lim.items()]
    parts += [f"{k}={','.join(v)}" for k, v in doc["binding"].items()]
    return " ".join(parts) or "-"


def render_list(docs: list[dict], usage: dict[str, dict], now_s: float) -> str:
    """The table of ``shunt token list``."""
    if not docs:
        return "no client tokens (create one with `shunt token create --label NAME`)"
    extra = sorted({k for u in usage.values() for k in u})
    head = ["ID", "LABEL", "STATE", "CREATED", "EXPIRES", "LAST USED", *[c.upper() for c in extra], "LIMITS"]
    rows = [[d["id"], d["label"], d["state"], _when(d["created_s"], now_s), _when(d["expires_s"], now_s),
             _when(d["last_used_s"], now_s), *[str(usage.get(d["id"], {}).get(c, "-")) for c in extra],
             _limits_text(d)] for d in docs]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


@contextlib.contextmanager
def _store(paths: Paths) -> Iterator[TokenStore]:
    """The token store, sharing each change with the cluster when config.toml has ``[cluster]``."""
    paths.ensure()
    config = load_config(paths, create=False) if os.path.exists(paths.config) else None
    mirror, close = (None, lambda: None)
    if config is not None and config.cluster.enabled:
        from .cluster_tokens import cli_mirror  # noqa: PLC0415 - a shunt alone never imports redis
        mirror, close = cli_mirror(config, paths)
    try:
        with TokenStore(paths.tokens_db, mirror=mirror) as store:
            yield store
    finally:
        close()


def cmd_create(args) -> int:
    fields = {"label": args.label, "ttl": args.ttl, "accounts": args.accounts, "kinds": args.kinds,
              "models": args.models, "rpm": args.rpm, "tpm": args.tpm, "daily_tokens": args.daily_tokens,
              "monthly_usd": args.monthly_usd, "max_concurrent": args.max_concurrent}
    try:
        spec = spec_from_fields(fields)
    except ValueError as exc:
        raise ConfigError(str(exc).replace("daily_tokens", "--daily-tokens").replace("monthly_usd", "--monthly-usd")
                          .replace("max_concurrent", "--max-concurrent")) from None
    with _store(_paths()) as store:
        record, token = store.create(spec, time.time())
    print(token)
    expiry = f", expires {_when(record.expires_s, 0)}" if record.expires_s else ""
    print(f"shunt: client token {record.id} ({record.label}) created{expiry}; it is shown only this once",
          file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    paths = _paths()
    now = time.time()
    if not os.path.exists(paths.tokens_db):
        docs = []
    else:
        with TokenStore(paths.tokens_db) as store:
            docs = [record_doc(r, now) for r in store.list()]
    usage = token_usage(paths, [d["id"] for d in docs])
    if args.json:
        print(json.dumps([dict(d, usage=usage.get(d["id"], {})) for d in docs], indent=2))
    else:
        print(render_list(docs, usage, now))
    return 0


def _check_id(token_id: str) -> str:
    if not valid_id(token_id):
        raise ConfigError(f"{token_id[:40]!r} is not a token id (12 hex characters, see `shunt token list`)")
    return token_id


def cmd_revoke(args) -> int:
    paths = _paths()
    if not os.path.exists(paths.tokens_db):
        raise ConfigError("there are no client tokens")
    with _store(paths) as store:
        record = store.revoke(_check_id(args.id), time.time())
    print(f"shunt: client token {record.id} ({record.label}) revoked", file=sys.stderr)
    return 0


def cmd_rotate(args) -> int:
    paths = _paths()
    if not os.path.exists(paths.tokens_db):
        raise ConfigError("there are no client tokens")
    with _store(paths) as store:
        record, token = store.rotate(_check_id(args.id))
    print(token)
    print(f"shunt: client token {record.id} ({record.label}) has a new secret; the old one no longer works",
          file=sys.stderr)
    return 0


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import sqlite3

        try:
            return command(args)
        except TokenError as exc:
            raise ConfigError(str(exc)) from None
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot use {_paths().tokens_db}: {exc}") from None
    return run


def add_parser(sub) -> None:
    """``shunt token ...`` on the main parser's subcommands."""
    s = sub.add_parser("token", help="client tokens: create, list, revoke, rotate (works with shunt running or stopped)")
    tsub = s.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    c = tsub.add_parser("create", help="create a client token; prints it once, alone on stdout")
    c.add_argument("--label", required=True, help="who holds it (1-64 visible characters, unique among live tokens)")
    c.add_argument("--ttl", help="it expires after this long: 30d, 12h, 90m (default: never)")
    bind = c.add_mutually_exclusive_group()
    bind.add_argument("--accounts", metavar="A,B", help="only these accounts may serve it")
    bind.add_argument("--kinds", metavar="KIND,...", help="only accounts of these kinds: oauth, api_key, openai")
    c.add_argument("--models", metavar="GLOB,...", help="only these models (fnmatch patterns, e.g. claude-sonnet-*)")
    c.add_argument("--rpm", help="requests per minute")
    c.add_argument("--tpm", help="tokens per minute (input + output + cache writes)")
    c.add_argument("--daily-tokens", help="tokens per UTC day")
    c.add_argument("--monthly-usd", help="API-equivalent dollars per UTC month")
    c.add_argument("--max-concurrent", help="requests in flight at once")
    c.set_defaults(func=_guarded(cmd_create))
    ls = tsub.add_parser("list", help="every token: id, label, state, times, limits (never a secret)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_guarded(cmd_list))
    r = tsub.add_parser("revoke", help="revoke a token now (a running shunt refuses it within a second)")
    r.add_argument("id", metavar="ID")
    r.set_defaults(func=_guarded(cmd_revoke))
    r = tsub.add_parser("rotate", help="give a token a new secret (same id and limits); prints it once")
    r.add_argument("id", metavar="ID")
    r.set_defaults(func=_guarded(cmd_rotate))
