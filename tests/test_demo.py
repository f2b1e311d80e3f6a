"""The demo end to end: the story on a pipe, the live view on a terminal, ASCII, per-turn lines, a crash."""

import io
import os
import subprocess
import sys
import time

from shunt_lib.demo import run_demo
from tests.support import ROOT

SHUNT = os.path.join(ROOT, "shunt.py")


def test_the_default_demo_tells_its_story_on_a_pipe_within_30_seconds():
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONIOENCODING="utf-8")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, SHUNT, "demo"], env=env, capture_output=True, timeout=60)
    took = time.monotonic() - started
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, out + err
    assert took < 30, f"the demo took {took:.1f}s"
    assert "request moved from " in out and " (429)" in out  # a failover
    assert "holding requests until" in out and "then answered by" in out  # a hold, told and ended
    assert "window reset: back in service" in out  # a reset
    assert "Summary after" in out and " 0 failed" in out
    assert "conversation 1 turn" not in out  # per-turn lines only with --verbose
    assert "\x1b[" not in out  # not a terminal: no cursor movement, no colour
    assert len(out.splitlines()) < 60


def test_on_a_terminal_the_account_block_is_redrawn_in_place():
    import pty

    parent, child = pty.openpty()
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONIOENCODING="utf-8", TERM="xterm")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, SHUNT, "demo", "--seconds", "2"], env=env, stdin=child, stdout=child,
                            stderr=child, close_fds=True)
    os.close(child)
    chunks = []
    try:
        while True:
            try:
                data = os.read(parent, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(parent)
        proc.wait(60)
    out = b"".join(chunks).decode()
    assert proc.returncode == 0, out
    assert out.count("\r\x1b[3A\x1b[J") >= 2  # three account lines, moved over and redrawn
    assert "alpha" in out and "█" in out and "resets in" in out
    assert "\x1b[32mready\x1b[0m" in out or "\x1b[36mserving\x1b[0m" in out
    assert "Summary after" in out.rsplit("\x1b[J", 1)[1]  # the summary comes after the last redraw


def test_the_demo_works_in_ascii_on_a_non_utf8_stdout(tmp_path):
    env = dict(os.environ, PYTHONIOENCODING="ascii", LANG="C", LC_ALL="C", PYTHONUTF8="0", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, SHUNT, "demo", "--seconds", "1", "--verbose"], env=env,
                          capture_output=True, timeout=120)
    out, err = proc.stdout.decode("ascii"), proc.stderr.decode()  # ASCII only: decoding would raise otherwise
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err and "Error" not in out
    assert " 0 failed" in out and " -> " in out  # the conversations ran, with the ASCII arrow


class BreaksOnce(io.StringIO):
    """A stream whose write fails for one conversation's first turn, as a broken terminal would."""

    encoding = "utf-8"

    def write(self, text):
        if "conversation 2 turn 1 " in text:
            raise OSError("the terminal went away")
        return super().write(text)


def test_verbose_prints_each_turn_and_a_crashed_conversation_fails_the_demo():
    out = BreaksOnce()
    assert run_demo(duration_s=1, out=out, verbose=True) == 1
    text = out.getvalue()
    assert "conversation 1 turn 1 " in text and "Summary after" in text  # per-turn lines, then the summary
    assert "conversation 2 crashed: OSError" in text
    assert "0 failed" not in text


def test_the_simulator_overloads_a_request_once_and_reports_at_most_full_utilization():
    import http.client
    import json

    from shunt_lib.simulator import SimAccount, SimulatedAnthropic

    sim = SimulatedAnthropic([SimAccount("tok", 100, 60.0)], overload_rate=1.0, throttle_rate=0.0,
                             chunk_delay_s=0).start()
    port = int(sim.url.rsplit(":", 1)[1])

    def post(body):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/v1/messages", body=json.dumps(body), headers={"authorization": "Bearer tok"})
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("anthropic-ratelimit-unified-5h-utilization")
        finally:
            conn.close()

    try:
        body = {"model": "m", "max_tokens": 400, "messages": []}
        assert post(body)[0] == 529
        status, utilization = post(body)  # shunt's one retry of it gets through
        assert status == 200 and float(utilization) == 1.0  # 120+ tokens of a 100-token budget: full, not more
        assert post({**body, "max_tokens": 300})[0] == 529  # another request may be overloaded
    finally:
        sim.close()
