"""The browser attacks of tests/test_guard.py sent by a real browser: headless Chromium, driven by
selenium, loading a page from a second local server (another origin) and from a rebound name.

Each case checks what the page's script saw, what the browser received from shunt (Chromium's
network log, which records the status of answers a page may not read, preflights included), and that
shunt's state did not change: no pin, nothing sent upstream. Skipped without selenium, Chromium or
chromedriver (Debian: ``apt-get install chromium chromium-driver``; ``pip install selenium``).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support import CHROMEDRIVER, CHROMIUM, MSG, headless_chromium, wait_until

webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver")

REBOUND = "rebind.test"  # a name the browser resolves to 127.0.0.1, as a rebinding attacker makes it
ACCOUNTS = [("alice", "oauth"), ("bob", "oauth")]  # names distinctive enough to look for in a page
PIN_BOB = '{"account":"bob"}'
FETCH = """const [url, init, done] = arguments;
fetch(url, init).then(async r => done({status: r.status, body: await r.text()}),
                      e => done({error: e.name}));"""


class Site:
    """A second local web server: the attacker's origin. ``pages``: path → HTML it serves."""

    def __init__(self):
        pages = self.pages = {"/": "<!doctype html><title>elsewhere</title>"}

        class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: one request per connection
            timeout = 10  # a connection the browser opens and never uses must not hold teardown forever

            def do_GET(self):
                html = pages.get(self.path)
                body = (html or "not found").encode()
                self.send_response(200 if html else 404)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # noqa: A002 - stdlib signature
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # joins the request threads
        self.thread.join()


class Browser:
    """One headless Chromium with its network log. :meth:`fetch` runs ``fetch()`` in the current page."""

    def __init__(self, tmp_dir: str):
        options = webdriver.ChromeOptions()
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        self.driver = headless_chromium(tmp_dir, f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1", options=options)
        self.driver.set_script_timeout(15)
        self._requests: dict[str, tuple[str, str]] = {}  # DevTools request id → (method, url)
        self._statuses: dict[str, int] = {}  # DevTools request id → status of the answer received

    def quit(self) -> None:
        self.driver.quit()  # ends chromedriver and closes selenium's connections to it

    def fetch(self, url: str, **init) -> dict:
        """``{"status", "body"}`` as the page's script saw them, or ``{"error": name}`` (a CORS refusal
        is a ``TypeError``, with no status)."""
        return self.driver.execute_async_script(FETCH, url, init)

    def answers(self) -> list[tuple[str, str, int]]:
        """``(method, url, status)`` of every answer the browser received so far, preflights included."""
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            params = msg.get("params", {})
            if msg["method"] == "Network.requestWillBeSent":
                self._requests[params["requestId"]] = (params["request"]["method"], params["request"]["url"])
            elif msg["method"] == "Network.responseReceivedExtraInfo":
                # The raw answer's status (a CORS refusal has no Network.responseReceived); this event
                # may come before the request's own.
                self._statuses[params["requestId"]] = params["statusCode"]
        return [self._requests[i] + (status,) for i, status in self._statuses.items() if i in self._requests]

    def answer(self, method: str, url: str) -> int:
        """The status of the browser's first ``method url`` answer; waits for its log entry (another process's)."""
        assert wait_until(lambda: self.answered(method, url), timeout=10), \
            f"no answer to {method} {url}: {self.answers()}"
        return next(s for m, u, s in self.answers() if (m, u) == (method, url))

    def answered(self, method: str, url: str) -> bool:
        """Whether the browser received an answer to a ``method url`` so far."""
        return any((m, u) == (method, url) for m, u, _ in self.answers())


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()


@pytest.fixture
def browser(site, make_proxy, tmp_path):  # after the servers, so it quits (closing its connections) before they stop
    b = Browser(str(tmp_path))
    yield b
    b.quit()


def assert_untouched(p, upstream) -> None:
    assert p.pool.pinned is None, f"the page pinned {p.pool.pinned}"
    assert upstream.received == [], "the page's request reached the upstream"


def test_a_foreign_page_cannot_pin_with_a_simple_text_plain_post(make_proxy, upstream, site, browser):
    p = make_proxy(ACCOUNTS)
    browser.driver.get(site.origin + "/")
    url = f"{p.url}/use"
    seen = browser.fetch(url, method="POST", headers={"content-type": "text/plain"}, body=PIN_BOB)
    assert seen == {"error": "TypeError"}  # sent without a preflight; its answer is not the page's to read
    assert_untouched(p, upstream)
    assert browser.answer("POST", url) == 403


def test_a_foreign_pages_json_post_stops_at_shunts_preflight(make_proxy, upstream, site, browser):
    p = make_proxy(ACCOUNTS)
    browser.driver.get(site.origin + "/")
    url = f"{p.url}/use"
    seen = browser.fetch(url, method="POST", headers={"content-type": "application/json"}, body=PIN_BOB)
    assert seen == {"error": "TypeError"}
    assert_untouched(p, upstream)
    assert browser.answer("OPTIONS", url) == 403  # answered by shunt itself
    assert not browser.answered("POST", url)


def test_a_foreign_page_cannot_send_messages(make_proxy, upstream, site, browser):
    p = make_proxy(ACCOUNTS)
    browser.driver.get(site.origin + "/")
    simple = f"{p.url}/v1/messages?simple"
    seen = browser.fetch(simple, method="POST", headers={"content-type": "text/plain"}, body=json.dumps(MSG))
    assert seen == {"error": "TypeError"}
    assert_untouched(p, upstream)
    assert browser.answer("POST", simple) == 403
    preflighted = f"{p.url}/v1/messages?preflighted"
    seen = browser.fetch(preflighted, method="POST", body=json.dumps(MSG),
                         headers={"content-type": "application/json", "anthropic-version": "2023-06-01",
                                  "anthropic-dangerous-direct-browser-access": "true"})
    assert seen == {"error": "TypeError"} and browser.answer("OPTIONS", preflighted) == 403
    assert not browser.answered("POST", preflighted)
    assert_untouched(p, upstream)


def test_a_rebound_name_cannot_read_status_pin_or_send(make_proxy, upstream, browser):
    p = make_proxy(ACCOUNTS)
    rebound = f"http://{REBOUND}:{p.port}"
    browser.driver.get(rebound + "/status")  # the page now has shunt's address and port as its own origin
    assert "permission_error" in browser.driver.page_source and "alice" not in browser.driver.page_source
    seen = browser.fetch("/status")  # same-origin for the browser: it would hand the page the answer
    assert seen["status"] == 403 and json.loads(seen["body"])["error"]["type"] == "permission_error"
    assert "alice" not in seen["body"] and "bob" not in seen["body"]
    for path, body in (("/use", PIN_BOB), ("/v1/messages", json.dumps(MSG))):
        seen = browser.fetch(path, method="POST", headers={"content-type": "application/json"}, body=body)
        assert seen["status"] == 403, path
    assert browser.answer("GET", rebound + "/status") == 403
    assert_untouched(p, upstream)


def test_an_allowed_origin_can_pin(make_proxy, upstream, site, browser):
    p = make_proxy(ACCOUNTS, allowed_origins=[site.origin])
    browser.driver.get(site.origin + "/")
    url = f"{p.url}/use"
    seen = browser.fetch(url, method="POST", headers={"content-type": "application/json"}, body=PIN_BOB)
    assert seen["status"] == 200 and json.loads(seen["body"]) == {"pinned_account": "bob"}
    assert browser.answer("OPTIONS", url) == 204
    assert p.pool.pinned == "bob"


def test_a_foreign_text_plain_form_post_cannot_pin(make_proxy, upstream, site, browser):
    p = make_proxy(ACCOUNTS)
    # The classic trick: the field's name and value, joined by "=", make a JSON body.
    site.pages["/form"] = (f'<!doctype html><form method="POST" enctype="text/plain" action="{p.url}/use">'
                           '<input type="hidden" name=\'{"account":"bob","pad":"\' value=\'"}\'></form>')
    browser.driver.get(site.origin + "/form")
    browser.driver.execute_script("document.forms[0].submit()")
    status = browser.answer("POST", f"{p.url}/use")
    assert_untouched(p, upstream)
    assert status == 403
    assert wait_until(lambda: "permission_error" in browser.driver.page_source)  # the page became shunt's refusal
