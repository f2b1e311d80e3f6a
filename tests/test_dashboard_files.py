"""The dashboard's files (``GET /``, ``/dashboard.js``, ``/dashboard.css``): served by shunt itself from
package data, with their types and security headers, without the key (they hold no data), never
forwarded, and nothing else served by name. The page in a real browser: tests/test_dashboard.py."""

from __future__ import annotations

import json
import re

from shunt_lib import dashboard
from shunt_lib.config import STRATEGIES

KEY = "k1-0123456789abcdef"


def test_answer_has_the_file_its_type_and_the_security_headers():
    out = dashboard.answer("/dashboard.js")
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["content-type"] == "text/javascript; charset=utf-8"
    assert int(fields["content-length"]) == len(body) and b"/status" in body
    assert "default-src 'none'" in fields["content-security-policy"]
    assert "script-src 'self'" in fields["content-security-policy"]
    assert "frame-ancestors 'none'" in fields["content-security-policy"]
    assert fields["x-content-type-options"] == "nosniff" and fields["x-frame-options"] == "DENY"
    assert fields["cache-control"] == "no-store"
    head_only = dashboard.answer("/dashboard.js", head_only=True, close=True)
    assert head_only.endswith(b"connection: close\r\n\r\n") and head_only.startswith(head)


def test_the_page_has_no_inline_script_or_style_and_offers_every_strategy():
    html = dashboard.read_asset("dashboard.html").decode()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts == [(' src="/dashboard.js" defer', "")]  # the CSP allows no inline script
    assert "style=" not in html and "<style" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers either
    assert "http://" not in html.replace('"http://www.w3.org/2000/svg"', "") and "https://" not in html  # no CDN
    assert re.findall(r'<option value="([^"]+)"', html) == list(STRATEGIES)
    js = dashboard.read_asset("dashboard.js").decode()
    assert "https://" not in js and "x-api-key" in js and "sessionStorage" in js
    assert 'setAttribute("style"' not in js and "innerHTML" not in js


def test_get_and_head_serve_the_files_without_reaching_the_upstream(make_proxy, upstream):
    p = make_proxy()
    for path, ctype, marker in (("/", "text/html; charset=utf-8", b"<!doctype html>"),
                                ("/?x=1", "text/html; charset=utf-8", b"<!doctype html>"),
                                ("/dashboard.js", "text/javascript; charset=utf-8", b"use strict"),
                                ("/dashboard.css", "text/css; charset=utf-8", b":root")):
        status, headers, body = p.request("GET", path)
        assert (status, headers["content-type"]) == (200, ctype), path
        assert body.startswith(marker) or marker in body
        assert headers["x-frame-options"] == "DENY" and "content-security-policy" in headers
        status, headers, body = p.request("HEAD", path)
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    assert upstream.received == []


def test_unknown_names_and_traversal_are_not_served(make_proxy, upstream):
    p = make_proxy()
    for path in ("/dashboard.html", "/web/dashboard.js", "/nope.js", "/static/../dashboard.js", "/%2e%2e/pyz.py",
                 "/dashboard.js/", "/__init__.py", "/web/../__init__.py"):
        status, headers, body = p.request("GET", path)
        assert status in (400, 404), path
        assert headers["content-type"] == "application/json" and json.loads(body)["type"] == "error"
        assert b"import" not in body
    status, headers, _ = p.request("POST", "/", body={})
    assert status == 404  # only GET and HEAD serve the page
    assert upstream.received == []


def test_with_a_remote_key_the_files_load_without_it_but_the_data_needs_it(make_proxy):
    p = make_proxy(remote_key=KEY)
    assert p.request("GET", "/")[0] == 200
    assert p.request("GET", "/dashboard.js")[0] == 200
    assert p.request("GET", "/status")[0] == 401
    assert p.request("GET", "/recent")[0] == 401
    assert p.request("GET", "/status", headers={"x-api-key": KEY})[0] == 200


def test_the_files_hold_nothing_a_rebound_name_could_not_know_and_the_data_stays_refused(make_proxy):
    p = make_proxy()
    rebound = {"host": f"rebind.test:{p.port}"}
    status, _, body = p.request("GET", "/", headers=rebound)
    assert status == 200 and b"<!doctype html>" in body
    assert p.request("GET", "/status", headers=rebound)[0] == 403


def test_the_pages_own_calls_pass_the_guard(make_proxy):
    """What the browser sends for the page's calls: same-origin GETs (no Origin) and POSTs with shunt's own Origin."""
    p = make_proxy()
    own = {"host": f"127.0.0.1:{p.port}", "sec-fetch-site": "same-origin"}
    assert p.request("GET", "/status", headers=own)[0] == 200
    assert p.request("GET", "/recent?after=0", headers=own)[0] == 200
    assert p.request("GET", "/history?by=account", headers=own)[0] == 200
    status, _, body = p.request("POST", "/use", body={"account": "b"},
                                headers={**own, "origin": f"http://127.0.0.1:{p.port}"})
    assert status == 200 and json.loads(body) == {"pinned_account": "b"}
    localhost = {"host": f"localhost:{p.port}", "origin": f"http://localhost:{p.port}", "sec-fetch-site": "same-origin"}
    assert p.request("POST", "/alerts", body={"muted": True}, headers=localhost)[0] == 200


def test_an_installed_shunt_ships_every_dashboard_file():
    """``pip install .`` copies package data only by pyproject's ``package-data`` patterns (the pyz: tests/test_pyz.py)."""
    import fnmatch
    import os
    import tomllib

    from tests.support import ROOT

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["shunt_lib"]
    files = [f"web/{name}" for name in os.listdir(os.path.join(ROOT, "shunt_lib", "web"))]
    assert sorted(name for name, _ in dashboard.ASSETS.values()) == sorted(f[4:] for f in files)
    assert all(any(fnmatch.fnmatch(f, p) for p in patterns) for f in files)
