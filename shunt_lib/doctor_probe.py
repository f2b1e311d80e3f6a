"""The I/O of ``shunt doctor``: gather :class:`~shunt_lib.doctor.Facts`, each probe under a short timeout.

:class:`Probe` holds every way doctor touches the world (files, sockets, subprocesses, the
environment); tests pass their own environment, ``PATH`` and directories. Doctor only reads: it never
refreshes a token, writes a file or starts anything. The identity calls it makes spend no quota
(``GET /api/oauth/profile``, ``docs/protocol.md`` §4.7; ``GET /v1/models`` for an API key).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Mapping

import requests

from . import __version__
from .config import Paths, load_config
from .credentials import Credential, CredentialStore
from .doctor import identity_skip_reason
from .doctor_facts import (Answer, ClaudeFacts, Facts, FileFacts, PortFacts, ServiceFacts, SettingsFacts,
                           UpstreamFacts)
from . import service
from .claude_settings import SettingsError, read_settings, settings_path
from .errors import ConfigError
from .forwarding import OAUTH_BETA
from .fsutil import read_json
from .httpclient import new_session
from .instance import local_url
from .service_unit import LAUNCHD_LABEL

TIMEOUT_S = 5.0
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def read_claude_settings(path: str) -> SettingsFacts:
    """Read (never write) Claude Code's settings file (:func:`shunt_lib.claude_settings.read_settings`);
    a file that cannot be read or is not a JSON object is reported in ``error``."""
    try:
        data = read_settings(path)
    except SettingsError as exc:
        return SettingsFacts(path, True, error=str(exc))
    return SettingsFacts(path) if data is None else SettingsFacts(path, True, data)


def probe_service(env: Mapping[str, str], run: Callable[..., subprocess.CompletedProcess], platform: str,
                  system_dir: str = service.SYSTEM_UNIT_DIR, timeout_s: float = TIMEOUT_S) -> ServiceFacts:
    """Which service is installed (the unit files :mod:`shunt_lib.service` writes: the LaunchAgent on
    macOS, else the systemd user unit, then the system unit) and whether it is active
    (``launchctl print gui/UID/sh.shunt.proxy``, ``systemctl [--user] is-active shunt``)."""
    kinds = ("launchd",) if platform == "darwin" else ("user", "system")
    found = {t.kind: t for t in service.installed(env, system_dir)}
    for kind in kinds:
        tgt = found.get(kind)
        if tgt is None:
            continue
        if kind == "launchd":
            out, err = _run(run, ["launchctl", "print", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"], env, timeout_s)
            state = next((line.split("=", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("state =")), "")
            active = "active" if state == "running" else (state or ("" if err else "not loaded"))
            return ServiceFacts(tgt.path, "launchd", active, err)
        scope = ["--user"] if kind == "user" else []
        out, err = _run(run, ["systemctl", *scope, "is-active", "shunt"], env, timeout_s)
        restart = "shunt service restart" + ("" if scope else " --system")
        return ServiceFacts(tgt.path, "systemd --user" if scope else "systemd",
                            out.strip().splitlines()[0] if out.strip() else "", err, restart)
    return ServiceFacts()


def _run(run, argv: list[str], env: Mapping[str, str], timeout_s: float) -> tuple[str, str]:
    """(stdout, '' or why it could not run). A non-zero exit still gives its stdout (``is-active``
    prints ``inactive`` and exits 3)."""
    try:
        proc = run(argv, capture_output=True, text=True, timeout=timeout_s, env=dict(env), stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return "", f"{argv[0]} not found"
    except subprocess.TimeoutExpired:
        return "", f"`{' '.join(argv)}` did not answer within {timeout_s:g} s"
    except OSError as exc:
        return "", f"{argv[0]}: {exc.strerror or exc}"
    return proc.stdout or "", "" if proc.stdout else f"`{' '.join(argv)}` exited {proc.returncode}"


class Probe:
    """Every way doctor looks at the world. :param env: the environment (HOME, PATH, CLAUDE_CONFIG_DIR,
    ANTHROPIC_BASE_URL, proxies); :param run: ``subprocess.run``'s stand-in; :param timeout_s: per
    network or subprocess step, seconds."""

    def __init__(self, env: Mapping[str, str] | None = None, *, run: Callable = subprocess.run,
                 platform: str = sys.platform, timeout_s: float = TIMEOUT_S, system_dir: str = "/etc/systemd/system"):
        self.env = dict(os.environ if env is None else env)
        self.run = run
        self.platform = platform
        self.timeout_s = timeout_s
        self.system_dir = system_dir

    def stat(self, path: str, *, follow: bool = False) -> FileFacts:
        """Mode bits and owner of ``path`` (of a symbolic link itself unless ``follow``)."""
        try:
            st = os.stat(path) if follow else os.lstat(path)
        except FileNotFoundError:
            return FileFacts(path)
        except OSError as exc:
            return FileFacts(path, error=exc.strerror or str(exc))
        return FileFacts(path, st.st_mode & 0o7777, st.st_uid)

    def upstream(self, base_url: str) -> UpstreamFacts:
        """DNS, TCP, TLS (for https), then ``HEAD /`` for the ``Date`` header; stops at the first stage that fails."""
        parts = urllib.parse.urlsplit(base_url)
        host, scheme = parts.hostname or "", parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        facts = dict(host=host, port=port, scheme=scheme)
        try:
            infos = _within(self.timeout_s, socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            return UpstreamFacts(**facts, failed_stage="dns", error=_why(exc))
        sock, address, error = None, "", "no address"
        for family, kind, proto, _, sockaddr in infos:
            s = socket.socket(family, kind, proto)
            s.settimeout(self.timeout_s)
            try:
                s.connect(sockaddr)
            except OSError as exc:
                s.close()
                error = f"{sockaddr[0]}: {_why(exc)}"
                continue
            sock, address = s, sockaddr[0]
            break
        if sock is None:
            return UpstreamFacts(**facts, failed_stage="tcp", error=error)
        facts["address"] = address
        try:
            if scheme == "https":
                try:
                    sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
                except (OSError, ssl.SSLError) as exc:
                    return UpstreamFacts(**facts, failed_stage="tls", error=_why(exc))
                facts["tls_version"] = sock.version() or "?"
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout_s)
            conn.sock = sock  # the connection made above: each stage's failure is told apart
            try:
                conn.request("HEAD", "/", headers={"user-agent": f"shunt/{__version__} doctor"})
                resp = conn.getresponse()
                local_s = time.time()
                date = resp.getheader("date")
            except (OSError, http.client.HTTPException) as exc:
                return UpstreamFacts(**facts, failed_stage="http", error=_why(exc))
            finally:
                conn.close()
        finally:
            sock.close()
        return UpstreamFacts(**facts, date_s=_http_date_s(date), local_s=local_s)

    def identity(self, base_url: str, cred: Credential) -> Answer:
        """``GET /api/oauth/profile`` (OAuth) or ``GET /v1/models?limit=1`` (API key): neither spends quota."""
        if cred.kind == "oauth":
            url = base_url.rstrip("/") + "/api/oauth/profile"
            headers = {"authorization": f"Bearer {cred.access_token}", "anthropic-beta": OAUTH_BETA}
        else:
            url = base_url.rstrip("/") + "/v1/models?limit=1"
            headers = {"x-api-key": cred.api_key, "anthropic-version": "2023-06-01"}
        try:
            with new_session() as http:  # shunt's own settings: no proxy from the environment, no retries
                resp = http.get(url, headers=dict(headers, accept="application/json"), timeout=self.timeout_s)
        except requests.RequestException as exc:
            return Answer(error=type(exc).__name__)
        try:
            body = resp.json()
        except ValueError:
            body = None
        return Answer(resp.status_code, body)

    def port(self, host: str, port: int) -> PortFacts:
        """What answers on ``host``:``port`` as a client on this machine reaches it."""
        url = local_url(host, port)
        target = urllib.parse.urlsplit(url)
        try:
            with socket.create_connection((target.hostname, port), timeout=self.timeout_s):
                pass
        except ConnectionRefusedError:
            return PortFacts(host, port, "free")
        except OSError as exc:
            return PortFacts(host, port, "unknown", _why(exc))
        health = self._get_json(url + "/health")
        if isinstance(health, Answer) and health.status == 200 and isinstance(health.body, dict) \
                and health.body.get("status") == "ok":
            status = self._get_json(url + "/status")
            version = status.body.get("version") if status.status == 200 and isinstance(status.body, dict) else None
            return PortFacts(host, port, "shunt", f"version {version}" if isinstance(version, str) else "")
        what = (f"GET /health answered {health.status}" if not health.error
                else f"it does not answer HTTP ({health.error})")
        return PortFacts(host, port, "other", what)

    def _get_json(self, url: str) -> Answer:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(urllib.request.Request(url, method="GET"), timeout=self.timeout_s) as resp:
                status, body = resp.status, resp.read(1 << 20)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read(1 << 20)
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            return Answer(error=_why(getattr(exc, "reason", exc)))
        try:
            return Answer(status, json.loads(body))
        except ValueError:
            return Answer(status, None)

    def service(self) -> ServiceFacts:
        """See :func:`probe_service`."""
        return probe_service(self.env, self.run, self.platform, self.system_dir, self.timeout_s)

    def settings(self) -> SettingsFacts:
        """See :func:`read_claude_settings`."""
        return read_claude_settings(settings_path(self.env))

    def claude(self) -> ClaudeFacts:
        """``claude`` on ``$PATH`` and the first line of ``claude --version``."""
        path = shutil.which("claude", path=self.env.get("PATH", ""))
        if path is None:
            return ClaudeFacts()
        out, err = _run(self.run, [path, "--version"], self.env, self.timeout_s)
        return ClaudeFacts(path, out.strip().splitlines()[0][:200] if out.strip() else "", err)


def gather(paths: Paths, probe: Probe, now_s: float) -> Facts:
    """Look at everything :func:`~shunt_lib.doctor.decide` needs. Reads only; never raises for what it finds."""
    config, config_error = None, ""
    try:
        config = load_config(paths, create=False)
    except ConfigError as exc:
        config_error = str(exc)
    creds, unusable, creds_error = {}, {}, ""
    store = CredentialStore(paths.credentials)
    quiet = logging.getLogger("shunt.credentials")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # load() logs each unusable entry: doctor reports them as checks instead
    try:
        unusable = store.unusable()
        creds = store.load()
    except (ConfigError, OSError) as exc:
        creds_error = str(exc)
    finally:
        quiet.setLevel(level)
    flags = _flags(paths.state)
    facts = dict(home=probe.stat(paths.home, follow=True), config_path=paths.config, config_exists=os.path.exists(paths.config),
                 config=config, config_error=config_error, uid=os.getuid(), credentials=probe.stat(paths.credentials),
                 state=probe.stat(paths.state), creds=creds, unusable=unusable, creds_error=creds_error, flags=flags,
                 proxy_env={k: probe.env[k] for k in PROXY_VARS if probe.env.get(k)},
                 service=probe.service(), settings=probe.settings(), env_base_url=probe.env.get("ANTHROPIC_BASE_URL"),
                 claude=probe.claude())
    if config is not None:
        up = probe.upstream(config.server.upstream_url)
        reachable = not up.failed_stage
        identity = {}
        for a in config.accounts:
            cred = creds.get(a.name)
            if identity_skip_reason(cred, flags.get(a.name, {}), reachable, now_s) is None:
                identity[a.name] = probe.identity(config.server.upstream_url, cred)
        facts.update(upstream=up, identity=identity, port=probe.port(config.server.host, config.server.port))
    return Facts(**facts)


def _flags(path: str) -> dict[str, dict[str, bool]]:
    """``state.json``'s ``reauth_required`` / ``disabled`` per account ({} if missing or unreadable)."""
    try:
        state = read_json(path, default={})
    except (OSError, ValueError, RecursionError):
        return {}
    accounts = state.get("accounts") if isinstance(state, dict) else None
    if not isinstance(accounts, dict):
        return {}
    return {name: {k: entry.get(k) is True for k in ("reauth_required", "disabled")}
            for name, entry in accounts.items() if isinstance(entry, dict)}


def _within(timeout_s: float, fn, *args, **kw):
    """``fn(*args, **kw)`` on a helper thread, given up after ``timeout_s`` (``getaddrinfo`` has no timeout).

    :raises TimeoutError: if it did not return in time (the thread is left to finish on its own)."""
    result: list = []

    def call():
        try:
            result.append((True, fn(*args, **kw)))
        except BaseException as exc:  # handed to the caller
            result.append((False, exc))

    t = threading.Thread(target=call, name="shunt-doctor-dns", daemon=True)
    t.start()
    t.join(timeout_s)
    if not result:
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    ok, value = result[0]
    if not ok:
        raise value
    return value


def _why(exc: BaseException) -> str:
    """An error in words, without a traceback or an object's repr."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return str(exc) or type(exc).__name__


def _http_date_s(value: str | None) -> float | None:
    """An HTTP ``Date`` (RFC 9110 §5.6.7) as epoch seconds, or None."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
