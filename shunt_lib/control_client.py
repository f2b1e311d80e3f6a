"""The command line's client of a running shunt's control endpoints (``/status``, ``/use``, ``/reset``,
``/reload``): standard library HTTP, no proxy from the environment."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from .config import Paths, load_config
from .errors import ConfigError
from .instance import proxy_url


def control_request(paths: Paths, method: str, path: str, body: dict | None = None, timeout: float = 10,
                    url: str | None = None) -> dict:
    """Call a control endpoint of the running shunt (found by :func:`~shunt_lib.instance.proxy_url`),
    with the home's ``remote_key`` if it has one. :returns: the JSON answer.
    :raises ConfigError: shunt's own error message for an error answer, or "shunt is not running at
        URL" when nothing answers.
    """
    config = load_config(paths, create=False)
    url = proxy_url(paths, url) + path
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("content-type", "application/json")
    if config.server.remote_key:
        req.add_header("x-api-key", config.server.remote_key)
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
        raise ConfigError(f"shunt is not running at {url} ({getattr(exc, 'reason', exc)}); start it with `shunt serve`") from None
