"""The account commands: ``import``, ``add-account``, ``accounts``, ``remove``, ``logout``.

Each takes the parsed arguments and returns an exit code; secrets are read through ``args.read_secret``
(the terminal, hidden, or one line of stdin; never argv) and never printed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time

import requests

from .account_info import fetch_profile
from .config import Paths, add_account_to_config, load_config, remove_account_from_config, shunt_home
from .config_edit import openai_account_text, write_config_text
from .control_client import control_request
from .credentials import (Credential, CredentialStore, default_claude_credentials_path, parse_claude_code_credentials,
                          secret_problem)
from .errors import ConfigError
from .httpclient import new_session
from .login import claude_login, exchange_code, keychain_service, parse_paste, pkce_start, read_keychain
from .oauth import revoke_refresh_token
from .providers import PRESETS
from .state_file import edit_saved_state


def _paths() -> Paths:
    return Paths(shunt_home())


def _notify_running_proxy() -> None:
    """Ask a running ``serve`` to reload now (it also notices file changes by itself within a second)."""
    try:
        control_request(_paths(), "POST", "/reload", {}, timeout=3)
    except ConfigError:
        pass


def _store_account(paths: Paths, name: str, cred: Credential) -> None:
    load_config(paths)  # validate first: bad input changes no state
    CredentialStore(paths.credentials).put(name, cred)
    add_account_to_config(paths, name, cred.kind)
    edit_saved_state(paths.state, name, forget=False)  # a new login or key clears reauth_required / disabled
    _notify_running_proxy()


def _identity(paths: Paths, cred: Credential, email: str = "") -> Credential:
    """Fill in email and plan from /api/oauth/profile (best effort; the login works without them)."""
    with new_session() as http:
        profile = fetch_profile(http, load_config(paths).server.upstream_url, cred.access_token)
    p_email, p_plan = profile if profile else ("", "")
    return dataclasses.replace(cred, email=email or p_email or cred.email, plan=p_plan or cred.plan)


def _describe(cred: Credential) -> str:
    parts = [p for p in (cred.email, f"plan {cred.plan}" if cred.plan else "") if p]
    return f" ({', '.join(parts)})" if parts else ""


def cmd_import(args) -> int:
    """``shunt import``: add an OAuth account from a Claude Code login (file or Keychain)."""
    paths = _paths()
    live = False
    if args.keychain:
        raw, src = read_keychain(keychain_service(os.environ.get("CLAUDE_CONFIG_DIR"))), "the macOS Keychain"
        live = True
    else:
        src = args.source or default_claude_credentials_path()
        live = os.path.abspath(src) == os.path.abspath(default_claude_credentials_path())
        try:
            with open(src, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read Claude Code credentials at {src}: {exc.strerror}") from None
    cred = parse_claude_code_credentials(raw)
    if args.copy_only:
        cred = dataclasses.replace(cred, copy_only=True)
    if not args.force and not _may_replace(paths, args.name):
        print(f"kept account {args.name!r} as it was")
        return 1
    _store_account(paths, args.name, cred)
    print(f"imported account {args.name!r} from {src}{_describe(cred)}")
    if args.copy_only:
        print("copy-only: shunt will use this token until it expires and never refresh it.")
    elif live:
        print("warning: this is your live Claude Code login. Refresh tokens rotate: once shunt refreshes it, "
              "that Claude Code will have to log in again. `shunt add-account NAME` gives shunt a login of its "
              "own; `--copy-only` imports without ever refreshing.", file=sys.stderr)
    return 0


def _may_replace(paths: Paths, name: str) -> bool:
    """Whether ``import`` may store ``name``'s login: yes if it has no usable one (a new account, or one
    logged out or needing a login); otherwise the answer to a question on a terminal.

    :raises ConfigError: if a usable login would be replaced and there is no terminal to ask on.
    """
    current = CredentialStore(paths.credentials).load().get(name)
    if current is None:
        return True
    what = f"account {name!r}{_describe(current)} already has a login"
    if not sys.stdin.isatty():
        raise ConfigError(f"{what}; importing would replace its login: add --force to replace it, "
                          "or choose another name with --name")
    answer = input(f"{what}. Replace its login with this one? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _check_api_key(paths: Paths, key: str) -> None:
    """One free call (``GET /v1/models``) proves the key works. :raises ConfigError: if it does not."""
    base = load_config(paths).server.upstream_url
    try:
        with new_session() as http:
            resp = http.get(base + "/v1/models?limit=1", headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                            timeout=15)
    except requests.RequestException as exc:
        raise ConfigError(f"could not check the key: {base} is unreachable ({type(exc).__name__})") from None
    if resp.status_code in (401, 403):
        raise ConfigError(f"the API key was rejected ({resp.status_code}); nothing was saved")
    if resp.status_code != 200:
        raise ConfigError(f"could not check the key: {base}/v1/models answered {resp.status_code}")


def _add_openai_account(paths: Paths, args) -> int:
    """``add-account NAME --openai``: append the account's block to config.toml (validated first), then
    store its key (empty only with ``--no-key`` or an empty answer for a preset that takes none)."""
    models = tuple(m.strip() for m in (args.models or "").split(",") if m.strip())
    text = openai_account_text(paths, args.name, provider=args.provider or "", base_url=args.base_url or "",
                               models=models)
    preset = PRESETS.get(args.provider or "")
    key = "" if args.no_key else args.read_secret(f"API key for {args.name}"
                                                  + (" (empty: none)" if preset and not preset.needs_key else "") + ": ")
    if not key and not args.no_key and (preset is None or preset.needs_key):
        raise ConfigError("no API key given (pipe it on stdin or type it at the prompt; --no-key for a server "
                          "that takes none); nothing was saved")
    problem = secret_problem(key) if key else None
    if problem is not None:
        raise ConfigError(f"the API key {problem}; nothing was saved")
    if text is not None:
        write_config_text(paths, text)
    _store_account(paths, args.name, Credential(kind="openai", api_key=key))
    acct = next(a for a in load_config(paths).accounts if a.name == args.name)
    print(f"added OpenAI-compatible account {args.name!r} ({acct.base_url}; "
          + (f"models {', '.join(acct.models)}" if acct.models else "no models yet: add `models = [...]` to its "
             "block in config.toml or a [models] entry") + ("; no key" if not key else "") + ")")
    return 0


def cmd_add_account(args) -> int:
    """``shunt add-account``: log in with ``claude auth login``, ``--paste`` (PKCE), ``--api-key`` or
    ``--openai`` (an OpenAI-compatible provider)."""
    paths = _paths()
    openai_only = [f for f in ("provider", "base_url", "models", "no_key") if getattr(args, f, None)]
    if not getattr(args, "openai", False) and openai_only:
        raise ConfigError(f"--{openai_only[0].replace('_', '-')} goes with --openai")
    if getattr(args, "openai", False):
        return _add_openai_account(paths, args)
    config = load_config(paths)
    if args.api_key:
        key = args.read_secret(f"Anthropic API key for {args.name}: ")
        if not key:
            raise ConfigError("no API key given (pipe it on stdin or type it at the prompt)")
        problem = secret_problem(key)
        if problem is not None:
            raise ConfigError(f"the API key {problem}; nothing was saved")
        _check_api_key(paths, key)
        _store_account(paths, args.name, Credential(kind="api_key", api_key=key))
        print(f"added API-key account {args.name!r}")
        return 0
    if args.paste:
        login = pkce_start(config.server)
        print("Open this URL in a browser (on any machine), log in, and paste the code it shows (CODE#STATE):\n")
        print(login.url + "\n", flush=True)
        pasted = args.read_secret("Code: ")
        cred = exchange_code(config.server, login, parse_paste(pasted, login.state))
        cred = _identity(paths, cred)
    else:
        login_dir = paths.login_dir(args.name)
        print(f"Starting `claude auth login` for {args.name!r} (its login lives in {login_dir}, "
              "separate from your own Claude Code)...", flush=True)
        cred, email = claude_login(login_dir)
        cred = _identity(paths, cred, email)
    _store_account(paths, args.name, cred)
    print(f"added account {args.name!r}{_describe(cred)}")
    return 0


def cmd_accounts(args) -> int:
    """``shunt accounts``: list accounts and their token state (never a secret)."""
    paths = _paths()
    config = load_config(paths)
    store = CredentialStore(paths.credentials)
    creds, unusable = store.load(), store.unusable()
    if not config.accounts:
        print("no accounts; add one with `shunt add-account NAME`, `shunt import` or `shunt add-account NAME --api-key`")
        return 0
    for a in config.accounts:
        c = creds.get(a.name)
        if a.name in unusable:
            detail = "unusable credentials: " + unusable[a.name].split(": ", 1)[1]
        elif c is None:
            detail = f"no credentials: run `shunt add-account {a.name}`"
        elif c.kind == "oauth":
            exp = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.expires_at_ms / 1000)) if c.expires_at_ms else "unknown"
            detail = (f"token valid until {exp}" + (f", {c.email}" if c.email else "") + (f", plan {c.plan}" if c.plan else "")
                      + (", copy-only" if c.copy_only else ""))
        elif c.kind == "openai":
            detail = f"{a.base_url}" + (", key" if c.api_key else ", no key")
        else:
            detail = "API key"
        print(f"{a.name:<16} {a.kind:<8} {detail}")
    return 0


def cmd_remove(args) -> int:
    """``shunt remove``: delete an account's config, credentials, state and login directory."""
    paths = _paths()
    removed_cfg = remove_account_from_config(paths, args.name)
    removed_cred = CredentialStore(paths.credentials).remove(args.name)
    login_dir = paths.login_dir(args.name)
    had_login = os.path.isdir(login_dir)
    if had_login:
        shutil.rmtree(login_dir, ignore_errors=True)
    if not (removed_cfg or removed_cred or had_login):
        print(f"no account named {args.name!r}", file=sys.stderr)
        return 1
    edit_saved_state(paths.state, args.name, forget=True)
    _notify_running_proxy()
    print(f"removed account {args.name!r}")
    return 0


def cmd_logout(args) -> int:
    """``shunt logout``: revoke an account's refresh token and forget it; it stays configured."""
    paths = _paths()
    config = load_config(paths)
    store = CredentialStore(paths.credentials)
    cred = store.load().get(args.name)
    if cred is None:
        print(f"account {args.name!r} has no credentials", file=sys.stderr)
        return 1
    revoked = False
    if cred.kind == "oauth":
        with new_session() as http:
            revoked = revoke_refresh_token(http, config.server.oauth_revoke_url, config.server.oauth_client_id, cred)
    store.remove(args.name)
    _notify_running_proxy()
    print(f"logged out {args.name!r}" + (" (refresh token revoked)" if revoked else " (revocation not confirmed)")
          + f"; it stays configured as reauth_required: `shunt add-account {args.name}` logs in again")
    return 0
