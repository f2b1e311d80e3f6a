"""``shunt <command>``: argparse front end. ``main(argv) -> exit code``; no work at import time."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request

from . import __version__
from .config import (Paths, add_account_to_config, load_config, remove_account_from_config, shunt_home)
from .credentials import Credential, CredentialStore, default_claude_credentials_path, parse_claude_code_credentials
from .errors import ConfigError
from .status_view import render_status

log = logging.getLogger("shunt")


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr: one line per request, plus account events. Tokens are never logged."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("shunt")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def _paths() -> Paths:
    return Paths(shunt_home())


# -- serve --------------------------------------------------------------------------------------
def cmd_serve(args) -> int:
    from .server import make_server, start_background

    setup_logging(args.verbose)
    paths = _paths()
    config = load_config(paths)
    srv = make_server(config, paths, host=args.host, port=args.port)
    start_background(srv)

    def stop(signum, frame):
        log.info("signal %d: stopping", signum)
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = srv.server_address[:2]
    log.info("shunt %s listening on http://%s:%d with %d account(s); strategy %s", __version__, host, port,
             len(config.accounts), config.server.strategy)
    if not config.accounts:
        log.warning("no accounts yet: add one with `shunt import` or `shunt add-account NAME --api-key`")
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv._serving = False  # serve_forever has returned; close() must not wait for it again
        srv.close()
        log.info("stopped; state saved")
    return 0


# -- accounts -------------------------------------------------------------------------------------
def cmd_import(args) -> int:
    paths = _paths()
    src = args.source or default_claude_credentials_path()
    try:
        with open(src, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read Claude Code credentials at {src}: {exc.strerror}") from None
    cred = parse_claude_code_credentials(raw)
    name = args.name
    add_account_to_config(paths, name, "oauth")
    CredentialStore(paths.credentials).put(name, cred)
    print(f"imported account {name!r} from {src}" + (f" (plan {cred.plan})" if cred.plan else ""))
    if os.path.abspath(src) == os.path.abspath(default_claude_credentials_path()):
        print("note: this is your live Claude Code login. Refresh tokens rotate: once shunt refreshes it, "
              "that Claude Code will have to log in again. A separate login per account avoids this.")
    return 0


def _read_secret(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt).strip()
    return sys.stdin.readline().strip()


def cmd_add_account(args) -> int:
    paths = _paths()
    if not args.api_key:
        raise ConfigError("add-account needs --api-key in this version (OAuth accounts: `shunt import`)")
    key = _read_secret(f"Anthropic API key for {args.name}: ")
    if not key:
        raise ConfigError("no API key given (pipe it on stdin or type it at the prompt)")
    if any(c.isspace() for c in key):
        raise ConfigError("the API key contains whitespace")
    load_config(paths)  # validate first: bad input changes no state
    add_account_to_config(paths, args.name, "api_key")
    CredentialStore(paths.credentials).put(args.name, Credential(kind="api_key", api_key=key))
    print(f"added API-key account {args.name!r}")
    return 0


def cmd_accounts(args) -> int:
    paths = _paths()
    config = load_config(paths)
    creds = CredentialStore(paths.credentials).load()
    if not config.accounts:
        print("no accounts; add one with `shunt import` or `shunt add-account NAME --api-key`")
        return 0
    import time

    for a in config.accounts:
        c = creds.get(a.name)
        if c is None:
            detail = "no credentials (run `shunt import --name %s`)" % a.name
        elif c.kind == "oauth":
            exp = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.expires_at_ms / 1000)) if c.expires_at_ms else "unknown"
            detail = f"token expires {exp}" + (f", {c.email}" if c.email else "") + (f", plan {c.plan}" if c.plan else "")
        else:
            detail = "API key " + ("sk-ant-…" if c.api_key.startswith("sk-ant-") else "…")
        print(f"{a.name:<16} {a.kind:<8} {detail}")
    return 0


def cmd_remove(args) -> int:
    paths = _paths()
    removed_cfg = remove_account_from_config(paths, args.name)
    removed_cred = CredentialStore(paths.credentials).remove(args.name)
    if not (removed_cfg or removed_cred):
        print(f"no account named {args.name!r}", file=sys.stderr)
        return 1
    print(f"removed account {args.name!r}")
    return 0


# -- talking to a running proxy ---------------------------------------------------------------------
def _control(method: str, path: str, body: dict | None = None) -> dict:
    config = load_config(_paths(), create=False)
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"http://{host}:{config.server.port}{path}"
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("content-type", "application/json")
    if config.server.remote_key:
        req.add_header("x-api-key", config.server.remote_key)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read())["error"]["message"]
        except Exception:
            msg = str(exc)
        raise ConfigError(msg) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"shunt is not running at {url} ({getattr(exc, 'reason', exc)}); start it with `shunt serve`") from None


def cmd_status(args) -> int:
    doc = _control("GET", "/status")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_status(doc))
    return 0


def cmd_use(args) -> int:
    doc = _control("POST", "/use", {"account": args.account})
    pinned = doc.get("pinned_account")
    print(f"pinned all traffic to {pinned}" if pinned else "routing automatically")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(duration_s=args.seconds)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shunt", description="Pool several Claude accounts behind one Anthropic endpoint.")
    p.add_argument("--version", action="version", version=f"shunt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the proxy in the foreground")
    s.add_argument("--host", help="bind address (default: server.host)")
    s.add_argument("--port", type=int, help="port (default: server.port)")
    s.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("import", help="add an OAuth account from a Claude Code credentials file")
    s.add_argument("--name", default="main", help="account name (default: main)")
    s.add_argument("--from", dest="source", metavar="PATH", help="credentials file (default: ~/.claude/.credentials.json)")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("add-account", help="add an account (--api-key: key read from stdin or a hidden prompt)")
    s.add_argument("name")
    s.add_argument("--api-key", action="store_true", help="add an Anthropic API-key account")
    s.set_defaults(func=cmd_add_account)

    s = sub.add_parser("accounts", help="list accounts (no secrets)")
    s.set_defaults(func=cmd_accounts)

    s = sub.add_parser("remove", help="remove an account and its credentials")
    s.add_argument("name")
    s.set_defaults(func=cmd_remove)

    s = sub.add_parser("status", help="show the running proxy's accounts")
    s.add_argument("--json", action="store_true", help="print the raw /status JSON")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("use", help="pin all traffic to one account, or `auto` to route")
    s.add_argument("account", metavar="NAME|auto")
    s.set_defaults(func=cmd_use)

    s = sub.add_parser("demo", help="watch shunt pool three simulated accounts (no accounts or network needed)")
    s.add_argument("--seconds", type=float, default=40.0, help="length of the workload (default 40)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"shunt: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
