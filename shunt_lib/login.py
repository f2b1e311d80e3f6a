"""Getting an OAuth login into shunt: Claude Code's own login flow, the PKCE paste-back, the Keychain.

* :func:`claude_login` runs the unmodified ``claude auth login`` with ``CLAUDE_CONFIG_DIR`` set to a
  directory that belongs to shunt alone, so the refresh token is never shared with the user's own
  Claude Code; the result is read from that directory (``.credentials.json``) or, on macOS, from the
  Keychain item ``Claude Code-credentials-<first 8 hex of sha256(dir)>`` (``docs/protocol.md`` §2.1).
* :func:`pkce_start` / :func:`parse_paste` / :func:`exchange_code`: the PKCE S256 flow with a
  ``CODE#STATE`` paste-back (``docs/protocol.md`` §1.2–1.4), for headless machines without ``claude``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.parse

import requests

from .config import ServerConfig
from .credentials import Credential, parse_claude_code_credentials
from .errors import ConfigError
from .httpclient import new_session
from .oauth import RefreshStatus, parse_token_response

SCOPES = "org:create_api_key user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload"
KEYCHAIN_SERVICE = "Claude Code-credentials"
KEYCHAIN_TIMEOUT_S = 5.0  # `security` can hang on a locked keychain over SSH (docs/protocol.md §2.1)


def keychain_service(config_dir: str | None) -> str:
    """The Keychain service name Claude Code uses for ``config_dir`` (None: the default login)."""
    if not config_dir:
        return KEYCHAIN_SERVICE
    digest = hashlib.sha256(os.path.abspath(config_dir).encode()).hexdigest()[:8]
    return f"{KEYCHAIN_SERVICE}-{digest}"


def read_keychain(service: str) -> bytes:
    """Read a generic-password item with ``security find-generic-password -s SERVICE -w`` (5 s timeout).

    :raises ConfigError: not macOS, item missing, or ``security`` timed out.
    """
    if sys.platform != "darwin":
        raise ConfigError("the Keychain exists only on macOS; use --from PATH")
    try:
        out = subprocess.run(["security", "find-generic-password", "-s", service, "-w"], capture_output=True,
                             timeout=KEYCHAIN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"`security` did not answer within {KEYCHAIN_TIMEOUT_S:.0f} s (is the keychain locked?)") from None
    if out.returncode != 0:
        raise ConfigError(f"no Keychain item {service!r}")
    return out.stdout.strip()


def read_login_dir(config_dir: str) -> tuple[Credential, str]:
    """The credential Claude Code stored for ``config_dir``, and the login's email ('' if unknown).

    :raises ConfigError: if no credential is there.
    """
    path = os.path.join(config_dir, ".credentials.json")
    if os.path.exists(path):
        with open(path, "rb") as f:
            cred = parse_claude_code_credentials(f.read())
    elif sys.platform == "darwin":
        cred = parse_claude_code_credentials(read_keychain(keychain_service(config_dir)))
    else:
        raise ConfigError(f"Claude Code wrote no credentials to {path}")
    email = ""
    try:
        with open(os.path.join(config_dir, ".claude.json"), "rb") as f:
            email = str((json.load(f).get("oauthAccount") or {}).get("emailAddress") or "")
    except (OSError, ValueError, AttributeError):
        pass
    return cred, email


def claude_login(config_dir: str, claude: str | None = None) -> tuple[Credential, str]:
    """Run ``claude auth login`` in ``config_dir`` (interactive, inherits the terminal) and read the result.

    :raises ConfigError: ``claude`` not on PATH, the login failed, or it stored nothing.
    """
    claude = claude or shutil.which("claude")
    if not claude:
        raise ConfigError("`claude` is not on PATH: install Claude Code, or use `shunt add-account NAME --paste`")
    os.makedirs(config_dir, mode=0o700, exist_ok=True)
    env = dict(os.environ, CLAUDE_CONFIG_DIR=config_dir)
    rc = subprocess.run([claude, "auth", "login"], env=env, check=False).returncode
    if rc != 0:
        raise ConfigError(f"`claude auth login` exited with status {rc}")
    return read_login_dir(config_dir)


@dataclasses.dataclass(frozen=True)
class PkceLogin:
    """One PKCE login in progress: the URL to open, and the secrets to finish it (never printed)."""

    url: str
    verifier: str
    state: str
    redirect_uri: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_start(server: ServerConfig) -> PkceLogin:
    """Build the authorize URL: S256 challenge of a 32-byte verifier and an independent random state."""
    verifier = _b64url(secrets.token_bytes(32))
    challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
    state = _b64url(secrets.token_bytes(32))
    query = urllib.parse.urlencode({
        "code": "true",
        "client_id": server.oauth_client_id,
        "response_type": "code",
        "redirect_uri": server.oauth_redirect_uri,
        "scope": SCOPES,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
    }, quote_via=urllib.parse.quote)
    return PkceLogin(f"{server.oauth_authorize_url}?{query}", verifier, state, server.oauth_redirect_uri)


def parse_paste(text: str, expected_state: str) -> str:
    """Return the authorization code from a pasted ``CODE#STATE`` (or a callback URL with ``code``/``state``).

    :raises ConfigError: if the state is missing or differs from ``expected_state`` (possible CSRF).
    """
    text = text.strip()
    if text.startswith("http"):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(text).query)
        code, state = (q.get("code") or [""])[0], (q.get("state") or [""])[0]
        if "#" in code:
            code, state = code.split("#", 1)
    else:
        code, _, state = text.partition("#")
    if not code:
        raise ConfigError("nothing that looks like CODE#STATE was pasted")
    if not state or not secrets.compare_digest(state, expected_state):
        raise ConfigError("the pasted state does not match this login; start again with a fresh URL")
    return code


def exchange_code(server: ServerConfig, login: PkceLogin, code: str) -> Credential:
    """Trade the authorization code for tokens (a JSON body, ``docs/protocol.md`` §1.4).

    :raises ConfigError: if the token endpoint refuses or cannot be reached.
    """
    with new_session() as http:
        return _exchange(http, server, login, code)


def _exchange(http: requests.Session, server: ServerConfig, login: PkceLogin, code: str) -> Credential:
    try:
        resp = http.post(server.oauth_token_url, json={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": login.redirect_uri,
            "client_id": server.oauth_client_id,
            "code_verifier": login.verifier,
            "state": login.state,
        }, headers={"accept": "application/json"}, timeout=30)
    except requests.RequestException as exc:
        raise ConfigError(f"token endpoint unreachable: {type(exc).__name__}") from None
    result = parse_token_response(resp, None, time.time())
    if result.status is not RefreshStatus.OK or result.credential is None:
        raise ConfigError(f"token exchange failed: {result.message}")
    return result.credential
