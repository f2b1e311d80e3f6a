"""The web dashboard's files: ``GET /`` (the page), ``/dashboard.js`` and ``/dashboard.css``.

The three files are package data in ``shunt_lib/web/``, read with :mod:`importlib.resources` so they
load the same from a source checkout, an installed wheel and the single-file ``shunt.pyz`` (a zip).
No CDN, no build step: the page draws its charts itself as SVG and works air-gapped.

The files hold no data and no secret (the page asks the control API for everything, with the
``remote_key`` the user types when a call answers 401), so they are served without the key and
without the ``Host``/``Origin`` checks, like ``/health``: a DNS-rebinding page or another site can
load them but learns nothing, and every call the script then makes is checked as any other control
request (:mod:`shunt_lib.guard`). Only the names in :data:`ASSETS` are served (an exact match: no
path is ever joined, so no traversal). Each answer carries a Content-Security-Policy allowing only
shunt's own scripts, styles and connections (no inline script, no framing: clickjacking the pin
buttons is refused), ``x-content-type-options: nosniff`` and ``cache-control: no-store`` (a new shunt
version's page is never mixed with an old script).
"""

from __future__ import annotations

import importlib.resources
import threading

from .errors import NotFound
from .forwarding import reason_phrase

#: path → (file in ``shunt_lib/web/``, content type).
ASSETS: dict[str, tuple[str, str]] = {
    "/": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}

#: https://www.w3.org/TR/CSP3/ ; ``frame-ancestors 'none'`` is the CSP form of ``x-frame-options: DENY``.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

_cache: dict[str, bytes] = {}
_lock = threading.Lock()


def is_asset(method: str, route: str) -> bool:
    """Whether ``method route`` asks for one of the dashboard's files (``GET`` or ``HEAD`` of a path in
    :data:`ASSETS`; ``route`` without the query string)."""
    return route in ASSETS and method in ("GET", "HEAD")


def read_asset(name: str) -> bytes:
    """The bytes of ``shunt_lib/web/<name>`` (read once, then kept). :raises FileNotFoundError:
    the package was installed without its data files."""
    with _lock:
        if name not in _cache:
            _cache[name] = importlib.resources.files("shunt_lib").joinpath("web", name).read_bytes()
        return _cache[name]


def answer(route: str, *, head_only: bool = False, close: bool = False) -> bytes:
    """The whole HTTP answer to ``GET route`` (only its head for ``HEAD``): 200 with the file and the
    headers above. :param route: a key of :data:`ASSETS`. :raises KeyError: any other route.
    :raises NotFound: the file is missing (see :func:`read_asset`)."""
    name, ctype = ASSETS[route]
    try:
        body = read_asset(name)
    except OSError:
        raise NotFound(f"the dashboard's {name} is not installed with this shunt; reinstall it") from None
    fields = {"content-type": ctype, "content-length": str(len(body)), **SECURITY_HEADERS}
    if close:
        fields["connection"] = "close"
    head = f"HTTP/1.1 200 {reason_phrase(200)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode("latin-1") + (b"" if head_only else body)
