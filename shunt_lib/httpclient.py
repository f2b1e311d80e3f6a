"""The one way shunt makes a ``requests.Session`` (token refresh, usage and profile polls, commands).

The proxied traffic itself goes through :mod:`shunt_lib.upstream` (urllib3); this is for the small
side calls. Every session is built the same way, on purpose:

* no retries (``max_retries=0``): shunt decides itself what to retry, and a refresh token must never
  be sent twice by a transport retry (it is single-use);
* no proxy, netrc or CA bundle from the environment (``trust_env = False``) unless the caller asks:
  secrets must not go through a proxy the user did not configure for shunt;
* no cookies kept: one session serves every account, so nothing an answer sets may reach another
  account's calls.

Whoever creates a session closes it (:func:`new_session` documents who that is at each call site).
"""

from __future__ import annotations

import http.cookiejar

import requests
from requests.adapters import HTTPAdapter


def new_session(*, trust_env: bool = False, pool_maxsize: int = 10) -> requests.Session:
    """A configured ``requests.Session``; the caller must :meth:`~requests.Session.close` it.

    :param trust_env: honour ``*_proxy``, netrc and CA-bundle environment variables (off by default).
    :param pool_maxsize: connections kept alive per host.
    """
    session = requests.Session()
    session.trust_env = trust_env
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = HTTPAdapter(max_retries=0, pool_maxsize=pool_maxsize)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
