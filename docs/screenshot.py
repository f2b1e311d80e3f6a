"""Make ``docs/dashboard.png``: the web dashboard of a demo pool, photographed by headless Chromium.

    python docs/screenshot.py [--output docs/dashboard.png]

Runs the real proxy in a temporary home in front of the simulated Anthropic API (as ``shunt demo``
does: no account, no network), with three accounts. A week of made-up usage is written to that home's
``usage.db`` first so the history charts have something to show, then a few dozen requests go
through shunt itself (the cards, the feed and the savings are theirs). Needs selenium, ``chromium``
and ``chromedriver`` (Debian: ``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shunt_lib.clients import LOCAL, Client, TokenLimits, TokenRecord  # noqa: E402
from shunt_lib.config import load_config  # noqa: E402
from shunt_lib.history import db_path, open_db, write_batch  # noqa: E402
from shunt_lib.homes import write_home  # noqa: E402
from shunt_lib.server import make_server, serve_in_thread, start_background  # noqa: E402
from shunt_lib.simulator import SimAccount, SimulatedAnthropic  # noqa: E402

ACCOUNTS = (("work", 9000), ("personal", 6000), ("spare", 30000))  # name, simulated output tokens per window
WINDOW_S = 5 * 3600
MODELS = ("claude-opus-4-7", "claude-sonnet-4-5", "claude-haiku-4-5")


def past_week(now_s: int, rnd: random.Random) -> list[dict]:
    """Made-up finished requests over the last 7 days: busier in the day, mostly on the first accounts."""
    records = []
    for hours_ago in range(7 * 24, 0, -1):
        start = now_s - hours_ago * 3600
        day_curve = max(0.0, math.sin((time.localtime(start).tm_hour - 7) / 14 * math.pi))
        for _ in range(int(rnd.uniform(0, 30) * day_curve)):
            name = rnd.choices([a for a, _ in ACCOUNTS], weights=(5, 3, 1))[0]
            records.append({"ts_s": start + rnd.randrange(3600), "account": name, "model": rnd.choice(MODELS),
                            "status": 200 if rnd.random() > 0.02 else 529, "input_tokens": rnd.randint(5, 400),
                            "output_tokens": rnd.randint(80, 1500), "cache_read_tokens": rnd.randint(5000, 60000),
                            "cache_creation_tokens": rnd.randint(0, 4000), "duration_ms": rnd.randint(800, 20000),
                            "held_ms": 0, "attempts": 1})
    return records


#: The clients the requests come from (the dashboard's clients table), by a demo header in place of client tokens.
CLIENTS = ("local", "ci-runner", "alice", "ci-runner")


def demo_client(handler) -> Client:
    """The client a request names in ``x-demo-client`` (the screenshot's stand-in for client tokens)."""
    name = handler.headers.by_name.get("x-demo-client", "local")
    if name == "local":
        return LOCAL
    limits = TokenLimits(rpm=60, monthly_usd=50.0) if name == "ci-runner" else TokenLimits()
    return Client(name, f"tk_{name}", TokenRecord(f"tk_{name}", name, 0.0, limits=limits))


def send(port: int, n: int, rnd: random.Random) -> None:
    """``n`` requests through shunt, each a few turns long so the prompt grows (cache reads)."""
    for i in range(n):
        turns = [{"role": "user", "content": "Refactor the parser " * rnd.randint(50, 400)}]
        body = json.dumps({"model": rnd.choice(MODELS), "max_tokens": 400, "messages": turns,
                           "metadata": {"user_id": f"user_session_{i % 4}"}})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/v1/messages", body=body, headers={"content-type": "application/json",
                                                                    "anthropic-version": "2023-06-01",
                                                                    "x-demo-client": CLIENTS[i % len(CLIENTS)]})
            conn.getresponse().read()
        finally:
            conn.close()


def photograph(url: str, output: str, tmp_dir: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))))
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver"),
                                                                env=dict(os.environ, TMPDIR=tmp_dir)))
    try:
        # --window-size counts the window's frame: make the page itself 1280 x 900.
        width, height = driver.execute_script("return [window.outerWidth - window.innerWidth, "
                                              "window.outerHeight - window.innerHeight]")
        driver.set_window_size(1280 + width, 900 + height)
        driver.get(url)
        wait = WebDriverWait(driver, 20)
        wait.until(lambda d: len(d.find_elements("css selector", ".card")) == len(ACCOUNTS))
        wait.until(lambda d: d.find_elements("css selector", "#chart-tokens rect.series"))
        wait.until(lambda d: d.find_elements("css selector", "#feed-rows tr"))
        driver.save_screenshot(output)
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard.png"))
    args = parser.parse_args(argv)
    rnd = random.Random(9)
    sim = SimulatedAnthropic([SimAccount(f"sim-token-{n}", budget, WINDOW_S) for n, budget in ACCOUNTS],
                             chunk_delay_s=0.0, throttle_rate=0.0, overload_rate=0.05).start()
    with tempfile.TemporaryDirectory(prefix="shunt-screenshot-") as home:
        paths = write_home(home, sim.url, [(name, "oauth") for name, _ in ACCOUNTS], token="sim-token-{name}",
                           refresh_token="sim-refresh", server={"strategy": "fill-first"})
        now_s = int(time.time())
        conn = open_db(db_path(home), now_s)
        write_batch(conn, past_week(now_s, rnd))
        conn.close()
        srv = make_server(load_config(paths), paths, port=0)
        srv.authenticate = demo_client
        try:
            start_background(srv, refresh=False, recovery=False, usage=False, reload=False)
            serve_in_thread(srv, poll_interval_s=0.05)
            send(srv.port, 40, rnd)
            srv.pool.cool("personal", now_s + 95, "429 throttled")
            photograph(f"http://127.0.0.1:{srv.port}/", args.output, home)
        finally:
            srv.close()
            sim.close()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
