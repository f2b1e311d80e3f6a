"""``shunt doctor``: what is wrong with this installation, decided from gathered facts (pure).

:mod:`shunt_lib.doctor_probe` gathers a :class:`Facts` (files, config, credentials, the upstream, the
port, the service, Claude Code's settings, ``claude``); :func:`decide` turns it into a list of
:class:`Check` results with the current time as an argument, and :func:`render` prints them, one line
each::

    ✓ config.toml is valid (2 accounts, port 8082)
    ✗ credentials.json is mode 0644 (readable by others) — fix: chmod 600 /home/u/.config/shunt/credentials.json
    ! the clock is 95 s ahead of api.anthropic.com's — fix: sync the clock (timedatectl set-ntp true)

Levels: ``ok`` (✓), ``warn`` (!: worth knowing, does not fail), ``skip`` (-: could not be checked
because an earlier check failed or it does not apply) and ``fail`` (✗: exit status 1). Nothing here
does I/O, and no message ever contains a token or key.
"""

from __future__ import annotations

import dataclasses
import json
import os.path
import urllib.parse
from typing import Mapping

from .account_info import parse_profile
from .config import Config
from .credentials import Credential
from .doctor_facts import ClaudeFacts, Facts, ServiceFacts, UpstreamFacts
from .status_view import duration_text

LEVELS = ("ok", "warn", "skip", "fail")
#: Clock skew against the upstream's ``Date`` header above which doctor warns, seconds. Rate-limit
#: resets (epoch seconds from the upstream) and token expiry are compared with the local clock.
MAX_SKEW_S = 30.0
CLAUDE_INSTALL = "npm install -g @anthropic-ai/claude-code"


@dataclasses.dataclass(frozen=True)
class Check:
    """One result: ``check`` (a stable id such as ``account.work.expiry``), ``level`` (one of
    :data:`LEVELS`), ``detail`` (the sentence printed) and ``fix`` (what to run or do; '' if nothing)."""

    check: str
    level: str
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """Whether this result lets doctor succeed (every level but ``fail``)."""
        return self.level != "fail"

    def to_json(self) -> dict:
        """``{check, ok, level, detail, fix}`` (``fix`` is null when there is nothing to do)."""
        return {"check": self.check, "ok": self.ok, "level": self.level, "detail": self.detail, "fix": self.fix or None}


# -- decisions -----------------------------------------------------------------------------------
def identity_skip_reason(cred: Credential | None, flags: Mapping[str, bool], upstream_ok: bool, now_s: float) -> str | None:
    """Why the identity call for an account is not made (None: make it). The gatherer and
    :func:`decide` share it: an expired token or a flagged account would only be rejected."""
    if cred is None:
        return "no credentials"
    if cred.kind == "openai":  # its key belongs to another provider: never sent to the Anthropic upstream
        return "an OpenAI-compatible provider's key is not checked against the Anthropic API"
    if not upstream_ok:
        return "the upstream is unreachable"
    if flags.get("reauth_required"):
        return "it needs a new login"
    if cred.kind == "oauth" and cred.expires_at_ms and cred.expires_at_ms / 1000 <= now_s:
        return "its access token has expired (shunt refreshes it when it is next used)"
    return None


def upstream_ok(facts: Facts) -> bool:
    """Whether the upstream answered HTTP."""
    return facts.upstream is not None and not facts.upstream.failed_stage


def decide(facts: Facts, now_s: float) -> list[Check]:
    """All results, in the order printed. :param now_s: the current time, epoch seconds."""
    out = check_config(facts) + check_files(facts)
    if facts.config is not None:
        for account in facts.config.accounts:
            out += check_account(facts, account.name, account.kind, now_s)
        out += check_upstream(facts)
        out += check_port(facts)
    out += check_service(facts.service)
    out += check_settings(facts)
    out += check_claude(facts.claude)
    return out


def check_config(facts: Facts) -> list[Check]:
    """config.toml valid, and at least one account."""
    if facts.config is None:
        return [Check("config", "fail", f"config.toml is invalid: {facts.config_error}",
                      f"edit {facts.config_path}")]
    server = facts.config.server
    out = []
    if not facts.config_exists:
        out.append(Check("config", "warn", f"there is no {facts.config_path} yet (defaults in use)", "shunt setup"))
    else:
        out.append(Check("config", "ok", f"config.toml is valid ({len(facts.config.accounts)} account(s), "
                                         f"port {server.port})"))
    if not facts.config.accounts:
        out.append(Check("accounts", "fail", "no accounts: shunt has nothing to send requests with",
                         "shunt import (your Claude Code login) or shunt add-account NAME"))
    if facts.creds_error:
        out.append(Check("credentials", "fail", f"credentials.json cannot be used: {facts.creds_error}",
                         f"shunt add-account NAME for each account (or repair {facts.credentials.path})"))
    return out


def check_files(facts: Facts) -> list[Check]:
    """The home is not writable by others; credentials.json and state.json are 0600 and the user's."""
    out = []
    home = facts.home
    if home.error:
        out.append(Check("home", "fail", f"cannot examine shunt's home {home.path}: {home.error}", ""))
    elif home.mode is None:
        out.append(Check("home", "warn", f"shunt's home {home.path} does not exist yet", "shunt setup"))
    elif home.mode & 0o022:
        out.append(Check("home", "fail", f"shunt's home {home.path} is writable by other users (mode {home.mode:04o}): "
                                         "they could replace its credentials", f"chmod go-w {home.path}"))
    else:
        out.append(Check("home", "ok", f"shunt's home {home.path} is writable only by its owner"))
    for key, f in (("files.credentials", facts.credentials), ("files.state", facts.state)):
        name = os.path.basename(f.path)
        if f.error:
            out.append(Check(key, "fail", f"cannot examine {f.path}: {f.error}", ""))
        elif f.mode is None:
            out.append(Check(key, "ok", f"{name} does not exist yet"))
        elif f.uid != facts.uid:
            out.append(Check(key, "fail", f"{name} is owned by uid {f.uid}, not by you (uid {facts.uid})",
                             f"sudo chown {facts.uid} {f.path}"))
        elif f.mode & 0o077:
            out.append(Check(key, "fail", f"{name} is mode {f.mode:04o} (others may read it)", f"chmod 600 {f.path}"))
        else:
            out.append(Check(key, "ok", f"{name} is mode 0600 and yours"))
    return out


def _login_fix(name: str, kind: str) -> str:
    return f"shunt add-account {name}" + (" --api-key" if kind == "api_key" else "")


def check_account(facts: Facts, name: str, kind: str, now_s: float) -> list[Check]:
    """Token present, expiry, refreshable (OAuth), flags from state.json, identity."""
    pre = f"account.{name}"
    cred = facts.creds.get(name)
    flags = facts.flags.get(name, {})
    if name in facts.unusable:
        return [Check(f"{pre}.token", "fail", facts.unusable[name], _login_fix(name, kind))]
    if cred is None:
        return [Check(f"{pre}.token", "fail", f"account {name!r} has no credentials", _login_fix(name, kind))]
    out = [Check(f"{pre}.token", "ok", f"account {name!r}: {'access token' if cred.kind == 'oauth' else 'API key'} present")]
    if cred.kind == "oauth":
        out.append(_expiry(pre, name, cred, flags, now_s))
        out.append(_refreshable(pre, name, cred, flags, now_s))
    elif flags.get("disabled") or flags.get("reauth_required"):
        status = "disabled" if flags.get("disabled") else "reauth_required"
        out.append(Check(f"{pre}.state", "fail", f"account {name!r} is {status} in state.json",
                         _login_fix(name, kind)))
    out.append(_identity(pre, name, cred, flags, facts, now_s))
    return out


def _expiry(pre: str, name: str, cred: Credential, flags: Mapping[str, bool], now_s: float) -> Check:
    if not cred.expires_at_ms:
        return Check(f"{pre}.expiry", "warn", f"account {name!r}: access token expiry unknown")
    left_s = cred.expires_at_ms / 1000 - now_s
    if left_s > 0:
        return Check(f"{pre}.expiry", "ok", f"account {name!r}: access token expires in {duration_text(left_s)}")
    ago = duration_text(-left_s)
    if cred.refreshable and not flags.get("reauth_required"):
        return Check(f"{pre}.expiry", "warn", f"account {name!r}: access token expired {ago} ago; "
                                               "shunt refreshes it when it is next used")
    return Check(f"{pre}.expiry", "fail", f"account {name!r}: access token expired {ago} ago and cannot be refreshed",
                 _login_fix(name, "oauth"))


def _refreshable(pre: str, name: str, cred: Credential, flags: Mapping[str, bool], now_s: float) -> Check:
    fix = _login_fix(name, "oauth")
    if flags.get("reauth_required"):
        return Check(f"{pre}.refresh", "fail", f"account {name!r} needs a new login (reauth_required in state.json)",
                     fix)
    if cred.copy_only:
        return Check(f"{pre}.refresh", "warn", f"account {name!r} is copy-only: shunt never refreshes it, so it stops "
                                                "working when its access token expires", fix)
    if not cred.refresh_token:
        return Check(f"{pre}.refresh", "fail", f"account {name!r} has no refresh token: it stops working when its "
                                                "access token expires", fix)
    return Check(f"{pre}.refresh", "ok", f"account {name!r}: refreshable")


def _identity(pre: str, name: str, cred: Credential, flags: Mapping[str, bool], facts: Facts, now_s: float) -> Check:
    key = f"{pre}.identity"
    where = "/api/oauth/profile" if cred.kind == "oauth" else "/v1/models"
    skip = identity_skip_reason(cred, flags, upstream_ok(facts), now_s)
    answer = facts.identity.get(name)
    if skip is not None or answer is None:
        return Check(key, "skip", f"account {name!r}: identity not checked: {skip or 'not asked'}")
    if answer.error:
        return Check(key, "warn", f"account {name!r}: identity not checked: {where} failed ({answer.error})")
    if answer.status in (401, 403):
        return Check(key, "fail", f"account {name!r}: the upstream rejected its "
                                  f"{'token' if cred.kind == 'oauth' else 'key'} ({where} answered {answer.status})",
                     _login_fix(name, cred.kind))
    if answer.status != 200:
        return Check(key, "warn", f"account {name!r}: identity not checked: {where} answered {answer.status}")
    if cred.kind == "api_key":
        return Check(key, "ok", f"account {name!r}: the API key is accepted ({where})")
    email, plan = parse_profile(answer.body) if isinstance(answer.body, dict) else ("", "")
    who = ", ".join(p for p in (email, f"plan {plan}" if plan else "") if p) or "no email in the answer"
    return Check(key, "ok", f"account {name!r}: logged in as {who}")


def redact_url(url: str) -> str:
    """``url`` without a user name or password (a proxy URL may carry them)."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(unparsable)"


def check_upstream(facts: Facts) -> list[Check]:
    """DNS, TCP, TLS and HTTP to the upstream; the proxy environment; the clock against its ``Date``."""
    up = facts.upstream
    if up is None:
        return []
    where = f"{up.host}:{up.port}"
    fix = "check the network, or server.upstream_url in config.toml"
    stage_text = {"dns": f"cannot resolve {up.host}", "tcp": f"cannot connect to {where}",
                  "tls": f"the TLS handshake with {where} failed", "http": f"{where} did not answer HTTP"}
    out = []
    if up.failed_stage:
        out.append(Check("upstream", "fail", f"upstream unreachable, {up.failed_stage.upper()} stage: "
                                             f"{stage_text[up.failed_stage]} ({up.error})", fix))
    else:
        tls = f"TLS {up.tls_version}" if up.tls_version else "no TLS (http)"
        out.append(Check("upstream", "ok", f"upstream {where} reachable (DNS ok, TCP ok to {up.address}, {tls})"))
    out += check_proxy_env(facts.proxy_env, up)
    if up.failed_stage:
        out.append(Check("clock", "skip", "clock not compared: the upstream is unreachable"))
    elif up.date_s is None or up.local_s is None:
        out.append(Check("clock", "skip", f"clock not compared: {up.host} sent no usable Date header"))
    else:
        out.append(check_clock(up.local_s - up.date_s, up.host))
    return out


def check_proxy_env(proxy_env: Mapping[str, str], up: UpstreamFacts) -> list[Check]:
    """shunt ignores proxy environment variables: the request path is a urllib3 pool of its own and
    side calls use :func:`~shunt_lib.httpclient.new_session` (``trust_env=False``)."""
    if not proxy_env:
        return [Check("proxy", "ok", "no HTTPS_PROXY in the environment (shunt connects directly, as it always does)")]
    name, value = next(iter(proxy_env.items()))
    detail = (f"{name} is set ({redact_url(value)}) but shunt does not use it: it connects to {up.host} directly")
    if up.failed_stage:
        return [Check("proxy", "warn", detail + "; where only the proxy can reach the internet, shunt cannot work",
                      f"allow direct connections to {up.host}:{up.port}")]
    return [Check("proxy", "warn", detail)]


def check_clock(skew_s: float, host: str) -> Check:
    """``skew_s``: local clock minus the upstream's ``Date`` (seconds; the header has 1 s resolution)."""
    if abs(skew_s) <= MAX_SKEW_S:
        return Check("clock", "ok", f"the clock agrees with {host}'s (within {max(1, round(abs(skew_s)))} s)")
    side = "ahead of" if skew_s > 0 else "behind"
    return Check("clock", "warn", f"the clock is {round(abs(skew_s))} s {side} {host}'s: rate-limit resets and "
                                  "token expiry are computed from it", "sync the clock (e.g. timedatectl set-ntp true)")


def check_port(facts: Facts) -> list[Check]:
    """shunt answering on its port, the port free, or taken by something else."""
    p = facts.port
    if p is None:
        return []
    where = f"port {p.port} on {p.host}"
    if p.state == "shunt":
        return [Check("port", "ok", f"shunt answers on {where}" + (f" ({p.detail})" if p.detail else ""))]
    if p.state == "free":
        return [Check("port", "fail", f"nothing listens on {where}: shunt is not running",
                      "shunt serve (or shunt service install)")]
    if p.state == "other":
        return [Check("port", "fail", f"{where} is taken by another program (not a shunt): {p.detail}",
                      "stop that program, or choose another port: server.port in config.toml, then shunt setup")]
    return [Check("port", "warn", f"cannot tell what listens on {where}: {p.detail}")]


def check_service(s: ServiceFacts) -> list[Check]:
    """A service installed, and active."""
    if not s.unit_path:
        detail = "no service installed (shunt runs only while `shunt serve` does)"
        return [Check("service", "warn", detail + (f"; {s.error}" if s.error else ""), "shunt service install")]
    if s.active == "active":
        return [Check("service", "ok", f"service installed ({s.unit_path}) and active")]
    if not s.active:
        return [Check("service", "warn", f"service installed ({s.unit_path}); cannot tell whether it runs: {s.error}")]
    return [Check("service", "fail", f"service installed ({s.unit_path}) but {s.active} ({s.manager})", s.restart)]


def shunt_urls(config: Config | None) -> tuple[int, set[str]] | None:
    """(port, the hosts under which Claude Code reaches this shunt), or None without a valid config."""
    if config is None:
        return None
    host = config.server.host
    hosts = {"127.0.0.1", "localhost", "::1"}
    if host not in ("", "0.0.0.0", "::"):
        hosts.add(host.lower())
    return config.server.port, hosts


def points_here(url: object, config: Config | None) -> bool:
    """Whether ``url`` (an ``ANTHROPIC_BASE_URL`` value) is ``http://<loopback or host>:<port>`` of this shunt."""
    target = shunt_urls(config)
    if target is None or not isinstance(url, str):
        return False
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "http" and (parts.hostname or "") in target[1] and port == target[0]
            and parts.path in ("", "/"))


def settings_base_url(data: object) -> object:
    """``env.ANTHROPIC_BASE_URL`` of a parsed settings document (None if absent)."""
    env = data.get("env") if isinstance(data, dict) else None
    return env.get("ANTHROPIC_BASE_URL") if isinstance(env, dict) else None


def check_settings(facts: Facts) -> list[Check]:
    """Claude Code's user settings point at this shunt; the shell's ``ANTHROPIC_BASE_URL`` is noted.

    A settings-file ``env`` value beats a shell export
    (https://code.claude.com/docs/en/settings#environment-variables)."""
    s = facts.settings
    if s is None:
        return []
    target = shunt_urls(facts.config)
    mine = f"http://127.0.0.1:{target[0]}" if target else "this shunt"
    env_here = points_here(facts.env_base_url, facts.config)
    out = []
    if s.error:
        out.append(Check("claude_settings", "fail", f"{s.path} cannot be read: {s.error} (doctor leaves it as it is)",
                         f"repair {s.path} by hand, then shunt setup"))
    elif facts.config is None:
        out.append(Check("claude_settings", "skip", "Claude Code's settings not compared: config.toml is invalid"))
    else:
        url = settings_base_url(s.data)
        if points_here(url, facts.config):
            out.append(Check("claude_settings", "ok", f"Claude Code's settings point at this shunt ({url})"))
        else:
            what = (f"{s.path} does not exist" if not s.exists else f"{s.path} has no env.ANTHROPIC_BASE_URL"
                    if url is None else f"Claude Code's settings point at {url!s:.200}, not at {mine}")
            if env_here and url is None:
                out.append(Check("claude_settings", "warn", f"{what}: only programs started with this shell's "
                                                            "ANTHROPIC_BASE_URL use shunt", "shunt setup"))
            else:
                out.append(Check("claude_settings", "fail", f"{what}: Claude Code does not use this shunt", "shunt setup"))
    if facts.env_base_url is not None and not env_here and facts.config is not None:
        out.append(Check("claude_env", "warn", f"this shell's ANTHROPIC_BASE_URL is {facts.env_base_url!s:.200}, not "
                                               f"{mine}: Claude Code follows its settings file, other tools started "
                                               "here go there", "unset ANTHROPIC_BASE_URL"))
    return out


def check_claude(c: ClaudeFacts) -> list[Check]:
    """``claude`` on PATH, and its version."""
    if not c.path:
        return [Check("claude", "warn", "`claude` (Claude Code) is not on PATH", CLAUDE_INSTALL)]
    if not c.version:
        return [Check("claude", "warn", f"{c.path} --version did not answer: {c.error}", CLAUDE_INSTALL)]
    return [Check("claude", "ok", f"claude {c.version} ({c.path})")]


# -- output --------------------------------------------------------------------------------------
MARKS = {"ok": ("✓", "ok"), "warn": ("!", "warn"), "skip": ("-", "skip"), "fail": ("✗", "FAIL")}


def can_encode(encoding: str | None) -> bool:
    """Whether text in ``encoding`` can show ✓, ✗ and —."""
    try:
        "✓✗—".encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def render(checks: list[Check], *, unicode: bool) -> str:
    """One line per result: ``MARK detail[ — fix: FIX]``; ASCII marks (``ok``/``FAIL``) when not ``unicode``."""
    dash = "—" if unicode else "-"
    lines = []
    for c in checks:
        mark = MARKS[c.level][0 if unicode else 1]
        line = f"{mark} {c.detail}" + (f" {dash} fix: {c.fix}" if c.fix else "")
        lines.append(line if unicode else line.encode("ascii", "replace").decode())
    return "\n".join(lines)


def render_json(checks: list[Check]) -> str:
    """The results as a JSON list of :meth:`Check.to_json` objects."""
    return json.dumps([c.to_json() for c in checks], indent=2)


def exit_status(checks: list[Check]) -> int:
    """1 if any result failed, else 0."""
    return 0 if all(c.ok for c in checks) else 1
