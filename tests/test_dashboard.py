"""The web dashboard in a real browser: headless Chromium, driven by selenium, loads ``/`` from the real
proxy in front of the fake upstream, shows the account cards, the request feed and a drawn chart, and
its pin / auto / strategy / mute controls change what ``/status`` says. With ``remote_key`` set the
page asks for the key and shows the pool once it is typed. Skipped without selenium, Chromium or
chromedriver (Debian: ``apt-get install chromium chromium-driver``; ``pip install selenium``).
"""

from __future__ import annotations

import json

import pytest

from tests.support import CHROMEDRIVER, CHROMIUM, MSG, client_token, headless_chromium, wait_until

webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver")

from selenium.webdriver.common.by import By  # noqa: E402 - after the skip above
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

KEY = "k1-0123456789abcdef"
WAIT_S = 15


@pytest.fixture
def driver(make_proxy, tmp_path):  # after the proxy, so it quits (closing its connections) before the proxy stops
    options = webdriver.ChromeOptions()
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: script errors, CSP refusals
    d = headless_chromium(str(tmp_path), "--window-size=1280,900", options=options)
    yield d
    d.quit()


def status(p, key: str | None = None) -> dict:
    code, _, body = p.request("GET", "/status", headers={"x-api-key": key} if key else None)
    assert code == 200, body
    return json.loads(body)


def has_history(p) -> bool:
    """Whether the history writer (its own thread, batching every 0.5 s) has written a request yet."""
    code, _, body = p.request("GET", "/history?by=account")
    return code == 200 and bool(json.loads(body)["buckets"])


def css(selector: str):
    return By.CSS_SELECTOR, selector


def test_the_page_shows_the_pool_and_its_controls_change_it(make_proxy, upstream, driver):
    p = make_proxy()
    for _ in range(2):
        assert p.request(body=MSG)[0] == 200
    assert wait_until(lambda: has_history(p)), "the requests never reached usage.db"
    driver.get(p.url + "/")
    wait = WebDriverWait(driver, WAIT_S)
    wait.until(lambda d: {c.get_attribute("data-account") for c in d.find_elements(*css(".card"))} == {"a", "b"})
    bars = wait.until(lambda d: d.find_elements(*css("#chart-tokens rect.series")))
    assert float(bars[0].get_attribute("height")) > 0
    assert driver.find_elements(*css("#chart-requests rect.series"))
    rows = wait.until(lambda d: len(d.find_elements(*css("#feed-rows tr"))) == 2 and d.find_elements(*css("#feed-rows tr")))
    assert "claude-test" in rows[0].text and "200" in rows[0].text
    assert "available" in driver.find_element(*css('.card[data-account="a"] .status')).text

    wait.until(EC.element_to_be_clickable(css('.card[data-account="b"] .pin'))).click()
    assert wait_until(lambda: status(p)["pinned_account"] == "b")
    wait.until(EC.text_to_be_present_in_element(css("#routing"), "pinned to b"))
    wait.until(EC.element_to_be_clickable(css("#auto"))).click()
    assert wait_until(lambda: status(p)["pinned_account"] is None)

    Select(driver.find_element(*css("#strategy"))).select_by_value("round-robin")
    assert wait_until(lambda: status(p)["strategy"] == "round-robin")

    driver.find_element(*css("#mute")).click()
    assert wait_until(lambda: status(p)["alerts"]["muted"] is True)
    wait.until(EC.text_to_be_present_in_element_attribute(css("#mute"), "aria-pressed", "true"))
    assert not driver.find_element(*css("#problem")).is_displayed()

    assert not driver.find_element(*css("#overrides")).is_displayed()  # the runtime overrides, once set
    assert p.request("POST", "/overrides", body={"model": "claude-sonnet-4-5", "effort": "high"})[0] == 200
    _, tid = client_token(p, "ci")
    assert p.request("POST", "/overrides", body={"fallback": "off", "token": tid})[0] == 200
    wait.until(EC.text_to_be_present_in_element(css("#overrides"), "every request: model claude-sonnet-4-5, effort high"))
    assert f"token {tid}: fallback off" in driver.find_element(*css("#overrides")).text
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []  # no script error, nothing the Content-Security-Policy refused


def test_with_a_remote_key_the_page_asks_for_it_once(make_proxy, upstream, driver):
    p = make_proxy(remote_key=KEY)
    driver.get(p.url + "/")
    wait = WebDriverWait(driver, WAIT_S)
    field = wait.until(EC.visibility_of_element_located(css("#key")))
    assert not driver.find_elements(*css(".card"))
    field.send_keys("not-the-key")
    driver.find_element(*css("#keyform button")).click()
    wait.until(EC.text_to_be_present_in_element(css("#keyprompt"), "not accepted"))
    driver.find_element(*css("#key")).send_keys(KEY)
    driver.find_element(*css("#keyform button")).click()
    wait.until(lambda d: len(d.find_elements(*css(".card"))) == 2)
    assert not driver.find_element(*css("#keyform")).is_displayed()
    assert driver.execute_script("return sessionStorage.getItem('shunt.remote_key')") == KEY
    wait.until(EC.element_to_be_clickable(css('.card[data-account="a"] .pin'))).click()
    assert wait_until(lambda: status(p, KEY)["pinned_account"] == "a")
    driver.refresh()  # kept for the tab: no second prompt
    wait.until(lambda d: len(d.find_elements(*css(".card"))) == 2)
    assert not driver.find_element(*css("#keyform")).is_displayed()


def test_the_page_shows_a_clients_table_once_more_than_local_sent_requests(make_proxy, upstream, driver):
    p = make_proxy()
    driver.get(p.url + "/")
    wait = WebDriverWait(driver, WAIT_S)
    wait.until(lambda d: len(d.find_elements(*css(".card"))) == 2)
    assert p.request(body=MSG)[0] == 200
    wait.until(lambda d: len(d.find_elements(*css("#feed-rows tr"))) == 1)
    assert not driver.find_element(*css("#clients")).is_displayed()  # only local: no table
    ci_token, _ = client_token(p, "ci-bot", rpm=60)
    for _ in range(2):
        assert p.request(body=MSG, headers={"x-api-key": ci_token})[0] == 200
    rows = wait.until(lambda d: len(d.find_elements(*css("#client-rows tr"))) == 2
                      and d.find_elements(*css("#client-rows tr")))
    assert driver.find_element(*css("#clients")).is_displayed()
    cells = [td.text for td in rows[0].find_elements(By.TAG_NAME, "td")]
    assert cells[:3] == ["ci-bot", "2", "0"] and cells[-1] == "rpm 2/60"
    assert rows[1].find_elements(By.TAG_NAME, "td")[0].text == "local"
    wait.until(lambda d: "by ci-bot" in d.find_element(*css("#feed-rows tr")).text)
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
