"""Who may talk to shunt from a browser: the ``Host``, ``Origin`` and ``content-type`` decisions, pure.

shunt listens on loopback and spends the user's accounts for whoever reaches it, so a web page must
not be able to drive it. Two browser attacks are refused here:

* **DNS rebinding.** A page at ``http://evil.example:8082`` re-points its own name at 127.0.0.1; the
  browser then treats shunt as that page's origin and lets it read every answer. The browser still
  sends ``Host: evil.example:8082``, so shunt answers only to a ``Host`` naming one of its own names
  (:class:`Policy`): a loopback address, ``localhost``, the bind address or a name in
  ``server.allowed_hosts``. A request carrying the valid ``remote_key`` may name any host: a
  rebinding page cannot know the key. Jupyter (``local_hostnames``, ``allow_origin``) and Ollama
  (its allowed hosts, ``OLLAMA_ORIGINS``) defend the same way.
* **Cross-origin requests.** A page on another origin may send "simple" requests (a ``text/plain``
  POST, an image load) without asking first. Browsers label such requests with ``Origin`` (every
  request that is not a same-origin GET or HEAD, https://fetch.spec.whatwg.org/#origin-header) and
  ``Sec-Fetch-Site`` (https://www.w3.org/TR/fetch-metadata/). A request whose ``Origin`` is neither
  shunt's own (``http://`` one of its names and its port: the dashboard of a later release is served
  from there) nor in ``server.allowed_origins`` is refused, and so is one that has no ``Origin`` but
  says ``Sec-Fetch-Site: cross-site`` or ``same-site`` (a cross-origin image or script load).
  Control endpoints that change state also require ``content-type: application/json``, which a page
  cannot send cross-origin without a preflight (https://fetch.spec.whatwg.org/#cors-safelisted-request-header).

Refusals are 403 ``permission_error`` (Anthropic's type for "this key may not use this resource",
https://docs.anthropic.com/en/api/errors): the request is well formed and a key would not help, so
neither 400 nor 401 fits. A malformed ``Host`` is a 400.

A request with no ``Host`` at all is accepted: HTTP/1.1 requires one (RFC 9112 §3.2), and every browser
sends it, so only non-browser clients (HTTP/1.0 tools, some tests) omit it, and they are no rebinding risk.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Iterable, Mapping

from .errors import BadRequest, PermissionDenied, UnsupportedMediaType

LOCAL_NAMES = frozenset({"localhost"})
#: ``Sec-Fetch-Site`` values a page on another origin produces (https://www.w3.org/TR/fetch-metadata/#sec-fetch-site-header).
FOREIGN_SITES = frozenset({"cross-site", "same-site"})


@dataclasses.dataclass(frozen=True)
class Policy:
    """What :func:`check_request` accepts: shunt's port, its own host names, the extra allowed origins.

    ``names``: lower-case host names and IP literals (IPv6 without brackets) accepted with shunt's
    ``port`` in ``Host`` and in shunt's own ``Origin``, besides every loopback address;
    ``forwarded``: ``(name, port)`` pairs accepted with that port instead (a tunnel or port forward
    that reaches shunt from another port); ``origins``: ``scheme://host[:port]``, lower-case, from
    ``server.allowed_origins``; ``usual_hosts``: exact ``Host`` values accepted without parsing, so
    the common request costs one set lookup. Build it with :meth:`build`.
    """

    port: int
    names: frozenset[str]
    origins: frozenset[str]
    forwarded: frozenset[tuple[str, int]] = frozenset()
    usual_hosts: frozenset[str] = frozenset()  # Host values accepted by one lookup (127.0.0.1:PORT, ...)

    @classmethod
    def build(cls, *, port: int, bind_host: str, allowed_hosts: Iterable[str] = (),
              allowed_origins: Iterable[str] = ()) -> "Policy":
        """:param port: the port shunt is bound to. :param bind_host: ``server.host``.
        :param allowed_hosts: names, or ``name:port`` (``[v6]:port``) for a forwarded port.
        :raises ValueError: a malformed ``allowed_hosts`` entry (the config loader refuses those first)."""
        names, forwarded = set(LOCAL_NAMES), set()
        for entry in allowed_hosts:
            parts = split_authority(entry) if not _is_ip(entry) else (_bare(entry), None)
            if parts is None:
                raise ValueError(f"not a host name or host:port: {entry!r}")
            if parts[1] is None:
                names.add(parts[0])
            else:
                forwarded.add(parts)
        if bind_host not in ("", "0.0.0.0", "::"):  # "any address" is not a name anyone connects by
            names.add(_bare(bind_host))
        usual = {authority(n, port) for n in names | {"127.0.0.1", "::1"}} | {authority(n, p) for n, p in forwarded}
        return cls(port, frozenset(names), frozenset(normalise_origin(o) for o in allowed_origins),
                   frozenset(forwarded), frozenset(usual))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
        return True
    except ValueError:
        return False


def _bare(host: str) -> str:
    host = host.strip().lower()
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def authority(host: str, port: int) -> str:
    """``host:port`` as written in a URL: an IPv6 address in brackets (``[::1]:8082``)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def split_authority(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (a ``Host`` value or an origin's authority) → ``(lower-case host, port or None)``;
    an IPv6 address loses its brackets. :returns: None if malformed (an unbracketed IPv6 address, a
    non-numeric or out-of-range port, two values joined by a comma, whitespace, userinfo)."""
    value = value.strip().lower()
    if not value or any(c in value for c in " ,@/\\\t"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        host, sep, port_text = value.partition(":")
        if not sep:
            return host, None
        if ":" in port_text:
            return None  # an IPv6 address without brackets
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5 or int(port_text) > 65535:
        return None
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (no brackets) is a loopback IP literal: 127.0.0.0/8, ``::1``, or IPv4-mapped 127.x."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def is_own_name(policy: Policy, host: str) -> bool:
    """Whether ``host`` (lower-case, no brackets) names shunt: a loopback address or one of ``policy.names``."""
    return host in policy.names or is_loopback(host)


def _names_shunt(policy: Policy, host: str, port: int) -> bool:
    return (port == policy.port and is_own_name(policy, host)) or (host, port) in policy.forwarded


def host_allowed(policy: Policy, value: str) -> bool:
    """Whether a ``Host`` value names shunt: one of its names with shunt's port or no port, or a
    forwarded ``name:port``.

    A ``Host`` without a port means the scheme's default (80): browsers always send the port when it
    is not the default, so a port-less ``Host`` on another port comes from a non-browser client, and
    the name check is what stops rebinding. :raises BadRequest: a malformed value.
    """
    parts = split_authority(value)
    if parts is None:
        raise BadRequest(f"malformed Host header {value[:100]!r}")
    host, port = parts
    return is_own_name(policy, host) if port is None else _names_shunt(policy, host, port)


def normalise_origin(origin: str) -> str:
    """An origin as compared: lower-case, without a trailing ``/``; the scheme's default port dropped."""
    origin = origin.strip().lower().rstrip("/")
    for scheme, default in (("http://", ":80"), ("https://", ":443")):
        if origin.startswith(scheme) and origin.endswith(default):
            return origin[: -len(default)]
    return origin


def own_origin(policy: Policy, origin: str) -> bool:
    """Whether ``origin`` is shunt itself: ``http://`` one of its names with its port (or a forwarded one)."""
    origin = normalise_origin(origin)
    if not origin.startswith("http://"):
        return False
    parts = split_authority(origin[len("http://"):])
    if parts is None:
        return False
    host, port = parts
    return _names_shunt(policy, host, port if port is not None else 80)


def check_request(policy: Policy, headers: Mapping[str, str], *, check_host: bool = True,
                  carries_key: bool = False) -> str | None:
    """Decide whether a request may be served, from its headers alone.

    :param headers: lower-case header name → value (``wire.Headers.by_name``).
    :param check_host: False for ``/health``, which reveals nothing and which load balancers probe by their own name.
    :param carries_key: the request carries the valid ``remote_key`` (False when none is configured):
        its ``Host`` is not checked, and an ``Origin`` equal to ``http://`` its ``Host`` is its own.
    :returns: the request's ``Origin`` if it has one and it is allowed (CORS answers echo it), else None.
    :raises PermissionDenied: a ``Host`` that is not shunt's, a foreign ``Origin``, or a cross-site
        request without one.
    :raises BadRequest: a malformed ``Host``.
    """
    host = headers.get("host")
    if (check_host and not carries_key and host is not None and host not in policy.usual_hosts
            and not host_allowed(policy, host)):
        raise PermissionDenied(
            f"Host {host[:100]!r} is not a name of this shunt (it answers to localhost, loopback addresses, "
            f"its bind address and server.allowed_hosts, on port {policy.port}); a page that re-points its own "
            "name at shunt is refused. Add the name to server.allowed_hosts, or send server.remote_key")
    origin = headers.get("origin")
    if origin is None:
        site = (headers.get("sec-fetch-site") or "").lower()
        if site in FOREIGN_SITES:
            raise PermissionDenied(f"a {site} browser request without an Origin may not use shunt")
        return None
    if (normalise_origin(origin) in policy.origins or own_origin(policy, origin)
            or (carries_key and host is not None and normalise_origin(origin) == "http://" + host.strip().lower())):
        return origin
    raise PermissionDenied(f"web pages from {origin[:100]!r} may not use shunt; add that origin to "
                           "server.allowed_origins to allow it")


def require_json(method: str, route: str, headers: Mapping[str, str]) -> None:
    """A state-changing control request must say ``content-type: application/json`` (parameters allowed).

    :raises UnsupportedMediaType: any other media type, or none: a form or ``text/plain`` POST is what a
        page on another site can send without a preflight.
    """
    ctype = headers.get("content-type") or ""
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(f"{method} {route} needs content-type: application/json (got {ctype[:100]!r})")
