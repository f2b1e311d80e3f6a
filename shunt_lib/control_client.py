"""The command line's client of a running shunt's control endpoints (``/status``, ``/use``, ``/reset``,
``/reload``, ...): standard library HTTP, no proxy from the environment."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from .config import Config, Paths, load_config
from .errors import ConfigError
from .instance import proxy_url


class Unreachable(ConfigError):
    """Nothing answered at ``url`` (refused, timed out, name not found); ``reason`` says which."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"shunt is not running at {url} ({reason}); start it with `shunt serve`")
        self.url, self.reason = url, reason


def remote_key(config: Config) -> str:
    """The key sent as ``x-api-key``: ``$SHUNT_REMOTE_KEY`` (for a remote shunt), else the home's admin
    key (``gateway.admin_key``, or the old ``server.remote_key``; '' for none)."""
    return os.environ.get("SHUNT_REMOTE_KEY") or config.gateway.admin_key or config.server.remote_key


def call(base_url: str, key: str, method: str, path: str, body: dict | None = None, timeout: float = 10) -> dict:
    """One control request to ``base_url`` + ``path`` (JSON body, ``x-api-key: key`` when ``key``).

    :returns: the JSON answer. :raises Unreachable: nothing answered ("shunt is not running at URL
        (reason)"). :raises ConfigError: shunt's own error message for an error answer.
    """
    url = base_url + path
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("content-type", "application/json")
    if key:
        req.add_header("x-api-key", key)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read())["error"]["message"]
        except Exception:
            msg = str(exc)
        raise ConfigError(msg) from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unreachable(url, str(getattr(exc, "reason", exc))) from None


def control_request(paths: Paths, method: str, path: str, body: dict | None = None, timeout: float = 10,
                    url: str | None = None) -> dict:
    """Call a control endpoint of the running shunt (found by :func:`~shunt_lib.instance.proxy_url`),
    with :func:`remote_key`. :returns: the JSON answer.
    :raises ConfigError: shunt's own error message for an error answer, or (:class:`Unreachable`)
        "shunt is not running at URL" when nothing answers.
    """
    config = load_config(paths, create=False)
    return call(proxy_url(paths, url), remote_key(config), method, path, body, timeout)
