"""``shunt <command>``: argparse front end. ``main(argv) -> exit code``; no work at import time."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from typing import Callable

from . import __version__
from .config import Paths, load_config, shunt_home
from .cli_tokens import add_parser as add_token_parser
from .control_client import Unreachable, control_request
from .errors import ConfigError, ShuntError
from .guard import authority
from .instance import HomeBusy, ServeLock, is_addr_in_use, port_in_use_message, wait_healthy
from .logsetup import log_file_path, setup_logging
from .sdnotify import ServeNotifier
from .server import make_server, start_background
from .state_file import reset_saved_state
from .status_view import render_status

log = logging.getLogger("shunt")


def _paths() -> Paths:
    return Paths(shunt_home())


# -- serve --------------------------------------------------------------------------------------
def cmd_serve(args) -> int:
    """``shunt serve``: run the proxy in the foreground until SIGTERM/SIGINT, then stop cleanly.

    :returns: 0 after a clean stop; 1 if another ``serve`` holds this home or the port is taken.
    """
    paths = _paths()
    config = load_config(paths)
    log_file = setup_logging(args.verbose, config.server, paths.home)
    if log_file is not None:
        print(f"shunt: logging to {log_file} (`shunt logs -f` follows it)", file=sys.stderr)
    if paths.writable_by_others():
        log.warning("shunt's home %s is writable by other users (mode %03o): they could replace its credentials "
                    "and config; fix it with `chmod go-w %s`", paths.home, os.stat(paths.home).st_mode & 0o777,
                    paths.home)
    lock = ServeLock(paths)
    try:
        lock.acquire()
    except HomeBusy as exc:
        print(f"shunt: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"shunt: cannot lock {lock.lock_path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        return _serve_locked(args, config, paths, lock)
    finally:
        lock.release()


def _serve_locked(args, config, paths: Paths, lock: ServeLock) -> int:
    host = args.host if args.host is not None else config.server.host
    port = args.port if args.port is not None else config.server.port
    try:
        srv = make_server(config, paths, host=host, port=port)
    except OSError as exc:
        if is_addr_in_use(exc):
            print(f"shunt: {port_in_use_message(host, port)}", file=sys.stderr)
        else:
            print(f"shunt: cannot listen on port {port} on {host}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    start_background(srv)

    signals = []

    def stop(signum, frame):
        signals.append(signum)
        if len(signals) == 1:
            log.info("signal %d: stopping (requests in progress may finish for up to %g s; a second signal ends "
                     "them now)", signum, config.server.drain_timeout_s)
            threading.Thread(target=srv.shutdown, daemon=True).start()
        else:
            log.info("signal %d again: ending requests in progress now", signum)
            srv.cut_drain()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = srv.server_address[:2]
    lock.announce(host, port)
    log.info("shunt %s listening on http://%s with %d account(s); strategy %s", __version__, authority(host, port),
             len(config.accounts), config.server.strategy)
    if not config.accounts:
        log.warning("no accounts yet: add one with `shunt import` or `shunt add-account NAME --api-key`")
    notifier = ServeNotifier(lambda: srv.last_turn_s)  # Type=notify units (shunt_lib.service_unit)
    notifier.ready(f"listening on http://{authority(host, port)}")
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        notifier.stopping()
        srv.close()
        log.info("stopped; state saved")
    return 0


def _control(method: str, path: str, body: dict | None = None, timeout: float = 10, url: str | None = None) -> dict:
    return control_request(_paths(), method, path, body, timeout, url)


def cmd_status(args) -> int:
    """``shunt status``: the running proxy's accounts, as a table or ``--json``."""
    doc = _control("GET", "/status", url=args.url)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_status(doc))
    return 0


def cmd_monitor(args) -> int:
    """``shunt monitor``: the live terminal view (see :mod:`shunt_lib.monitor`)."""
    from .monitor import run_monitor

    if not args.interval > 0:
        raise ConfigError("-i/--interval must be a number of seconds above 0")
    return run_monitor(_paths(), args.url, args.interval)


def cmd_use(args) -> int:
    """``shunt use NAME|auto``: pin all traffic to one account, or route again."""
    doc = _control("POST", "/use", {"account": args.account}, url=args.url)
    pinned = doc.get("pinned_account")
    print(f"pinned all traffic to {pinned}" if pinned else "routing automatically")
    return 0


def cmd_alerts(args) -> int:
    """``shunt alerts mute|unmute|test``: mute or unmute the running proxy's alerts (kept across
    restarts), or send a test alert through every channel (even when muted). :returns: 1 if ``test``
    reached no channel."""
    if args.action != "test":
        doc = _control("POST", "/alerts", {"muted": args.action == "mute"}, url=args.url)
        print("alerts muted (until `shunt alerts unmute`, across restarts)" if doc["muted"] else "alerts unmuted")
        return 0
    doc = _control("POST", "/alerts/test", {}, timeout=30, url=args.url)
    for r in doc["channels"]:
        print(f"{r['channel']}: {r['result']}" + (f" ({r['detail']})" if r["detail"] else ""))
    if doc["muted"]:
        print("alerts are muted: only this test was delivered (`shunt alerts unmute` turns them back on)")
    return 0 if any(r["result"] == "sent" for r in doc["channels"]) else 1


def cmd_reset(args) -> int:
    """``shunt reset NAME|--all``: clear exhaustion and cooldowns, in the running proxy and in ``state.json``."""
    paths = _paths()
    name = None if args.all else args.name
    if name is not None and name not in [a.name for a in load_config(paths).accounts]:
        raise ConfigError(f"unknown account {name!r}")
    reset_saved_state(paths.state, name)  # for a stopped proxy; a running one rewrites the file from memory
    try:
        cleared = _control("POST", "/reset", {"all": True} if name is None else {"account": name})["reset"]
        where = "in the running proxy"
    except ConfigError as exc:  # not running: the saved state is what the next start reads
        cleared, where = None, f"in the saved state ({exc})"
    what = "every account" if name is None else repr(name)
    print(f"reset {what} {where}" + (f": cleared {', '.join(cleared)}" if cleared else ""))
    return 0


def cmd_override(args) -> int:
    """``shunt override [show] | model MODEL|clear | fallback MODEL|off|clear | effort LEVEL|clear
    [--token ID]``: the runtime overrides (:mod:`shunt_lib.overrides`), in the running proxy, or in
    ``overrides.json`` (read at the next start) when it is not running."""
    from .overrides import Overrides, describe, overrides_path

    if args.field in (None, "show"):
        if args.value is not None:
            raise ConfigError("`shunt override show` takes no value")
        try:
            doc, where = _control("GET", "/overrides", url=args.url), "in the running proxy"
        except Unreachable:
            doc, where = Overrides(overrides_path(_paths().home)).doc(), "saved; shunt is not running"
    else:
        if args.value is None:
            raise ConfigError(f"say the value: `shunt override {args.field} VALUE|clear`")
        body = {args.field: None if args.value == "clear" else args.value}
        if args.token:
            body["token"] = args.token
        try:
            doc, where = _control("POST", "/overrides", body, url=args.url), "in the running proxy"
        except Unreachable:  # not running: the file is what the next start reads
            store = Overrides(overrides_path(_paths().home))
            try:
                doc = store.set({args.field: body[args.field]}, args.token)
            except ShuntError as exc:
                raise ConfigError(exc.message) from None
            where = "saved; shunt is not running, they apply when it starts"
        who = f"token {args.token}" if args.token else "every request"
        value = body[args.field]
        print(f"{args.field} override for {who}: " + (value if value is not None else "cleared") + f" ({where})")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    lines = describe(doc)
    print("\n".join(lines) if lines else f"no overrides ({where})")
    return 0


def cmd_doctor(args) -> int:
    """``shunt doctor``: check the set-up, one line per check (or ``--json``). :returns: 1 if any check failed."""
    from .doctor import can_encode, decide, exit_status, render, render_json
    from .doctor_probe import Probe, gather

    now_s = time.time()
    checks = decide(gather(_paths(), Probe(), now_s), now_s)
    print(render_json(checks) if args.json else render(checks, unicode=can_encode(sys.stdout.encoding)))
    return exit_status(checks)


def cmd_logs(args) -> int:
    """``shunt logs``: the service's log (see :mod:`shunt_lib.logview`). :returns: 0, or 1 if there is none."""
    if args.lines < 0:
        print("shunt: -n must be 0 or more", file=sys.stderr)
        return 2
    paths = _paths()
    server = load_config(paths, create=False).server

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        from .logview import show_logs

        return show_logs(log_file_path(server, paths.home), server.log_format, args.lines, follow_it=args.follow,
                         raw=args.json, out=out, err=lambda msg: print(f"shunt: {msg}", file=sys.stderr))
    except BrokenPipeError:  # `shunt logs | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 0
    except KeyboardInterrupt:  # the way out of -f
        return 0


def cmd_service(args) -> int:
    """``shunt service install|uninstall|status|restart|render``: see :mod:`shunt_lib.service`."""
    from . import service
    from .setup_steps import after_service_uninstall, stdin_is_tty

    kind = service.default_kind(args.system, args.launchd or None)
    if args.action == "render":
        sys.stdout.write(service.render(service.target(kind)).decode())
        return 0
    if args.action == "status":
        doc = service.status(args.system, launchd=args.launchd or None)
        print(f"{doc['unit']}: {'installed' if doc['installed'] else 'not installed'}, {doc['active']}")
        print(f"shunt at {doc['url'] or '?'}: /health {doc['health']}")
        return 0 if doc["health"] == "ok" else 1
    if args.action == "uninstall":
        results = service.uninstall(args.system, launchd=args.launchd or None, on_uninstalled=lambda: after_service_uninstall(
            _paths(), input, stdin_is_tty()))
    else:
        action = {"install": service.install, "restart": service.restart}[args.action]
        results = action(args.system, launchd=args.launchd or None)
    for r in results:
        print(r.line())
    return 1 if any(r.failed for r in results) else 0


def cmd_demo(args) -> int:
    """``shunt demo``: the real proxy in front of a simulated API (no accounts, no network)."""
    from .demo import DURATION_S, run_demo

    return run_demo(duration_s=DURATION_S if args.seconds is None else args.seconds, verbose=args.verbose)


def cmd_setup(args) -> int:
    """``shunt setup``: home, accounts, Claude Code's settings and the service, one line per step (or ``--undo``)."""
    from . import service
    from .cli_accounts import cmd_add_account, cmd_import
    from .credentials import default_claude_credentials_path
    from .setup_steps import SetupActions, run_setup, run_undo, stdin_is_tty

    paths = _paths()

    def add_account(name: str) -> int:
        return cmd_add_account(argparse.Namespace(name=name, paste=shutil.which("claude") is None, api_key=False,
                                                  read_secret=args.read_secret))

    def import_login() -> int:
        keychain = sys.platform == "darwin" and not os.path.exists(default_claude_credentials_path())  # macOS keeps it there
        return cmd_import(argparse.Namespace(name="main", source=None, keychain=keychain, copy_only=False, force=False))

    actions = SetupActions(add_account=add_account, import_login=import_login,
                           claude_on_path=lambda: shutil.which("claude") is not None, ask=input,
                           install_service=lambda port: service.install(),
                           uninstall_service=lambda: service.uninstall(),
                           restart_service=lambda: service.restart(),
                           wait_healthy=wait_healthy,
                           show_status=lambda url: cmd_status(argparse.Namespace(json=False, url=url)),
                           is_tty=stdin_is_tty())
    if args.undo:
        return run_undo(paths, actions)
    return run_setup(paths, actions, port=args.port, import_login=args.import_login, add=args.add,
                     no_service=args.no_service, force=args.yes)


def cmd_build_pyz(args) -> int:
    """``shunt build-pyz``: write the single-file ``shunt.pyz``, or with ``--with-redis`` ``shunt-redis.pyz``
    (see :mod:`shunt_lib.pyz`)."""
    from .pyz import PyzError, build_pyz

    output = args.output or os.path.join("dist", "shunt-redis.pyz" if args.with_redis else "shunt.pyz")
    try:
        built = build_pyz(output, with_redis=args.with_redis)
    except (PyzError, OSError) as exc:
        print(f"shunt: cannot build {output}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {built.path} ({built.size // 1024} KiB): " + ", ".join(f"{n} {v}" for n, v in built.bundled))
    return 0


URL_HELP = ("the running shunt, e.g. http://127.0.0.1:8082 (default: $SHUNT_URL, else where this home's "
            "`shunt serve` listens, else server.host and server.port)")


def _account_command(name: str) -> Callable[[argparse.Namespace], int]:
    """The account command ``name`` of :mod:`shunt_lib.cli_accounts`, imported when it runs (the
    login and credential modules stay out of ``serve``'s memory)."""
    def run(args: argparse.Namespace) -> int:
        from . import cli_accounts

        return getattr(cli_accounts, name)(args)
    return run


def cmd_usage(args) -> int:
    """``shunt usage``: requests, tokens and cost from ``usage.db`` (works with shunt stopped)."""
    import sqlite3

    from .history import db_path
    from .history_rollup import parse_duration_s
    from .usage_view import dumps, list_price, render_usage, usage_document

    try:
        since_s = int(time.time()) - parse_duration_s(args.since)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    if args.by == "instance" and not args.cluster:
        raise ConfigError("--by instance needs --cluster")
    paths = _paths()
    overrides = load_config(paths, create=False).pricing if os.path.exists(paths.config) else {}
    try:
        if args.cluster:  # every instance's rollups, summed, from the cluster's Redis
            from .cluster_usage import usage_document as cluster_document  # noqa: PLC0415 - only with [cluster]
            doc = cluster_document(load_config(paths, create=False), since_s, args.by, list_price(overrides))
        else:
            doc = usage_document(db_path(paths.home), since_s, args.by, list_price(overrides))
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the usage history: {exc}") from None
    print(dumps(doc) if args.json else render_usage(doc))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every command."""
    p = argparse.ArgumentParser(prog="shunt", description="Pool several Claude accounts behind one Anthropic endpoint.")
    p.add_argument("--version", action="version", version=f"shunt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the proxy in the foreground")
    s.add_argument("--host", help="bind address (default: server.host)")
    s.add_argument("--port", type=int, help="port (default: server.port)")
    s.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("import", help="add an OAuth account from a Claude Code login (file or Keychain)")
    s.add_argument("--name", default="main", help="account name (default: main)")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--from", dest="source", metavar="PATH", help="credentials file (default: ~/.claude/.credentials.json)")
    src.add_argument("--keychain", action="store_true", help="read Claude Code's macOS Keychain item")
    s.add_argument("--copy-only", action="store_true", help="use the token until it expires; never refresh it")
    s.add_argument("--force", action="store_true", help="replace an account of the same name without asking")
    s.set_defaults(func=_account_command("cmd_import"))

    s = sub.add_parser("add-account", help="log in a new account with Claude Code's own flow (or --paste / --api-key)")
    s.add_argument("name")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--paste", action="store_true", help="PKCE login for machines without `claude`: open a URL, paste CODE#STATE")
    how.add_argument("--api-key", action="store_true", help="an Anthropic API key, read from stdin or a hidden prompt")
    how.add_argument("--openai", action="store_true", help="an OpenAI-compatible provider (key from stdin or a hidden "
                     "prompt); with --provider NAME and/or --base-url URL, --models a,b, --no-key")
    s.add_argument("--provider", help="with --openai: a preset (openai, openrouter, groq, deepseek, together, fireworks, "
                   "mistral, gemini, ollama, vllm, lmstudio)")
    s.add_argument("--base-url", help="with --openai: the provider's OpenAI-compatible base URL")
    s.add_argument("--models", help="with --openai: comma-separated model ids or glob patterns it serves")
    s.add_argument("--no-key", action="store_true", help="with --openai: a local server that takes no key")
    s.set_defaults(func=_account_command("cmd_add_account"))

    s = sub.add_parser("logout", help="revoke an account's refresh token and forget it (stays configured)")
    s.add_argument("name")
    s.set_defaults(func=_account_command("cmd_logout"))

    s = sub.add_parser("accounts", help="list accounts (no secrets)")
    s.set_defaults(func=_account_command("cmd_accounts"))

    s = sub.add_parser("remove", help="remove an account: config, credentials, state and login directory")
    s.add_argument("name")
    s.set_defaults(func=_account_command("cmd_remove"))

    s = sub.add_parser("status", help="show the running proxy's accounts")
    s.add_argument("--json", action="store_true", help="print the raw /status JSON")
    s.add_argument("--url", help=URL_HELP)
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("monitor", help="a live full-screen view: accounts, requests, a chart; keys pin, route, mute")
    s.add_argument("-i", "--interval", type=float, default=1.0, metavar="SECONDS", help="seconds between polls (default 1)")
    s.add_argument("--url", help=URL_HELP)
    s.set_defaults(func=cmd_monitor)

    s = sub.add_parser("usage", help="requests, tokens and cost recorded in usage.db (works with shunt stopped)")
    s.add_argument("--since", default="24h", help="how far back: 24h, 7d, 30d ... (default 24h)")
    s.add_argument("--by", choices=("account", "model", "client", "day", "instance"), default="account")
    s.add_argument("--cluster", action="store_true", help="every shunt of the [cluster], summed from Redis "
                   "(whole UTC days; --by instance too)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_usage)

    add_token_parser(sub)

    s = sub.add_parser("use", help="pin all traffic to one account, or `auto` to route")
    s.add_argument("account", metavar="NAME|auto")
    s.add_argument("--url", help=URL_HELP)
    s.set_defaults(func=cmd_use)

    s = sub.add_parser("override", help="override the model, fallback model or effort of every request (or one "
                                        "client token's), at runtime; alone: show them")
    s.add_argument("field", nargs="?", choices=["show", "model", "fallback", "effort"])
    s.add_argument("value", nargs="?", metavar="VALUE|clear",
                   help="model: a model id; fallback: a model id or off; effort: low, medium, high, xhigh or max")
    s.add_argument("--token", metavar="ID", help="only for requests made with this client token (wins over the global one)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--url", help=URL_HELP)
    s.set_defaults(func=cmd_override)

    s = sub.add_parser("alerts", help="mute or unmute alerts, or send a test alert to every channel")
    s.add_argument("action", choices=["mute", "unmute", "test"])
    s.add_argument("--url", help=URL_HELP)
    s.set_defaults(func=cmd_alerts)

    s = sub.add_parser("reset", help="clear an account's exhausted or cooling mark (or every account's)")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("name", nargs="?", metavar="NAME")
    who.add_argument("--all", action="store_true", help="every account")
    s.set_defaults(func=cmd_reset)

    s = sub.add_parser("setup", help="set shunt up: config, an account, Claude Code's settings, the service")
    s.add_argument("--port", type=int, help="the port shunt listens on (default: server.port, 8082)")
    way = s.add_mutually_exclusive_group()
    way.add_argument("--import", dest="import_login", action="store_true", help="with no accounts: import your Claude Code login")
    way.add_argument("--add", metavar="NAME", help="with no accounts: log in a new account of shunt's own")
    s.add_argument("--no-service", action="store_true", help="do not install the service (run `shunt serve` yourself)")
    s.add_argument("--yes", action="store_true", help="point Claude Code at shunt even if its settings name a remote URL")
    s.add_argument("--undo", action="store_true", help="remove what setup added (accounts and credentials stay)")
    s.set_defaults(func=cmd_setup)

    s = sub.add_parser("doctor", help="check config, files, accounts, upstream, port, service and Claude Code's settings")
    s.add_argument("--json", action="store_true", help="print the results as a JSON list")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("logs", help="show the service's log (log_file, the journal, or the LaunchAgent's log)")
    s.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (survives rotation)")
    s.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many lines to show first (default 50)")
    s.add_argument("--json", action="store_true", help="print the lines as written (JSON lines with log_format=json)")
    s.set_defaults(func=cmd_logs)

    s = sub.add_parser("service", help="run shunt as a service: systemd (user or --system) or launchd")
    s.add_argument("action", choices=["install", "uninstall", "status", "restart", "render"],
                   help="render prints the file install would write and changes nothing")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--system", action="store_true", help="the systemd system unit, with its own user (root)")
    where.add_argument("--launchd", action="store_true", help="the macOS LaunchAgent (render: on any system)")
    s.set_defaults(func=cmd_service)

    s = sub.add_parser("demo", help="watch shunt pool three simulated accounts (no accounts or network needed)")
    s.add_argument("--seconds", type=float, default=None, help="length of the workload, seconds (default 14: about 15 s in all)")
    s.add_argument("-v", "--verbose", action="store_true", help="also print a line per conversation turn")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("build-pyz", help="build shunt.pyz: one file that runs shunt on a Python with nothing installed")
    s.add_argument("--output", help="where to write it (default dist/shunt.pyz, or dist/shunt-redis.pyz with --with-redis)")
    s.add_argument("--with-redis", action="store_true",
                   help="also bundle the Redis client a [cluster] needs (default output dist/shunt-redis.pyz)")
    s.set_defaults(func=cmd_build_pyz)
    return p


def read_secret(prompt: str) -> str:
    """A secret from the terminal (hidden) or one line of stdin; never from argv."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt).strip()
    return sys.stdin.readline().strip()


def main(argv: list[str] | None = None, *, read_secret: Callable[[str], str] = read_secret) -> int:
    """Run one command. :param read_secret: where secrets are read from (a test seam; default: the
    terminal or stdin). :returns: the exit code (2 for bad input or config, with the reason on stderr)."""
    args = build_parser().parse_args(argv)
    args.read_secret = read_secret
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"shunt: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file shunt cannot read or write (permissions, a full disk): said, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"shunt: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
