"""Generated shunt homes for the demo, the tests and the benchmark: config and fake credentials.

A user's home is written by shunt's commands; these are homes with made-up accounts in front of a
local simulated API, written with the same writers (:func:`~shunt_lib.config.write_config` and
:meth:`~shunt_lib.credentials.CredentialStore.put`), so they are valid by construction.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from .config import AccountConfig, Paths, write_config
from .credentials import Credential, CredentialStore


def write_home(home: str, upstream_url: str, accounts: Iterable[tuple[str, str] | AccountConfig], *,
               server: dict[str, Any] | None = None, expires_at_ms: int | None = None,
               token: str = "tok-{name}", refresh_token: str = "ref-{name}",
               models: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None) -> Paths:
    """Write ``config.toml`` and ``credentials.json`` in ``home`` for ``accounts`` in front of ``upstream_url``.

    :param accounts: ``(name, kind)`` pairs, ``kind`` ``oauth`` or ``api_key``, or
        :class:`~shunt_lib.config.AccountConfig` values (an ``openai`` account with its ``base_url``).
    :param models: a ``[models]`` table (see :func:`~shunt_lib.config.write_config`).
    :param cluster: a ``[cluster]`` table (``redis_url``, ``cluster_name``, ...).
    :param server: more ``[server]`` keys (``upstream_url`` and ``oauth_token_url`` are set here).
    :param expires_at_ms: OAuth access-token expiry, epoch ms (default: 8 hours from now).
    :param token: / :param refresh_token: secret patterns; ``{name}`` becomes the account name.
    :returns: the home's :class:`~shunt_lib.config.Paths`.
    :raises ConfigError: if a key or account would not validate (nothing is written then).
    """
    configs = [a if isinstance(a, AccountConfig) else AccountConfig(*a) for a in accounts]
    paths = Paths(home)
    keys = {"upstream_url": upstream_url, "oauth_token_url": upstream_url + "/v1/oauth/token"}
    keys.update(server or {})
    write_config(paths, keys, configs, models, cluster)
    store = CredentialStore(paths.credentials)
    exp = expires_at_ms if expires_at_ms is not None else int((time.time() + 8 * 3600) * 1000)
    for name, kind in ((a.name, a.kind) for a in configs):
        secret = token.format(name=name)
        if kind == "oauth":
            cred = Credential(kind="oauth", access_token=secret, refresh_token=refresh_token.format(name=name),
                              expires_at_ms=exp)
        else:
            cred = Credential(kind=kind, api_key=secret)
        store.put(name, cred)
    return paths
