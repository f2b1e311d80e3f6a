"""``shunt logs``: the last lines and new ones, from a log file (rotated or not) or the journal."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

from shunt_lib.cli import main
from shunt_lib.logview import (LAUNCHD_LOG, SYSTEM_UNIT, USER_UNIT, find_source, journal_command, last_lines, render,
                               render_journal_entry, show_file)
from tests.support import ROOT, wait_until, write_home

JSON_LINES = [
    '{"ts": 1796300531.25, "level": "INFO", "event": null, "logger": "shunt", "message": "shunt 1.0 listening"}',
    '{"ts": 1796300532.5, "level": "INFO", "event": "cooling", "logger": "shunt.events", "message": "account a '
    'cooling", "account": "a", "request_id": "ab12cd34", "upstream_request_id": "req_1"}',
    '{"ts": 1796300533.0, "level": "INFO", "event": "request", "logger": "shunt.access", "message": "POST '
    '/v1/messages account=b status=200 id=ab12cd34", "status": 200, "request_id": "ab12cd34"}',
]


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _home_with_log(log_file: str, log_format: str = "text") -> None:
    write_home(os.environ["SHUNT_HOME"], "http://127.0.0.1:9", [], {"log_file": log_file, "log_format": log_format})


def test_logs_n_shows_the_last_lines_of_the_log_file(tmp_path, capsys):
    _home_with_log("shunt.log")
    path = os.path.join(os.environ["SHUNT_HOME"], "shunt.log")
    with open(path, "w") as f:
        f.write("".join(f"2026-12-03 14:02:{i:02d} INFO    shunt: line {i}\n" for i in range(60)) + "partial")
    assert main(["logs", "-n", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"2026-12-03 14:02:{i:02d} INFO    shunt: line {i}"
                                                    for i in (57, 58, 59)]
    assert main(["logs"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 50
    assert main(["logs", "--json", "-n", "1"]) == 0
    got = capsys.readouterr()
    assert got.out == "2026-12-03 14:02:59 INFO    shunt: line 59\n" and 'log_format is "text"' in got.err


def test_logs_renders_json_lines_as_text_and_json_prints_them_as_written(capsys):
    _home_with_log("~/shunt.json.log", "json")
    os.makedirs(os.path.expanduser("~"))
    with open(os.path.expanduser("~/shunt.json.log"), "w") as f:
        f.write("\n".join(JSON_LINES) + "\n")
    assert main(["logs", "-n", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{_clock(1796300531.25)} INFO    shunt: shunt 1.0 listening",
        f"{_clock(1796300532.5)} INFO    shunt.events: account a cooling [id=ab12cd34 upstream_id=req_1]",
        f"{_clock(1796300533.0)} INFO    shunt.access: POST /v1/messages account=b status=200 id=ab12cd34"]
    assert main(["logs", "-n", "2", "--json"]) == 0
    got = capsys.readouterr()
    assert got.out.splitlines() == JSON_LINES[1:] and got.err == ""


def test_render_keeps_lines_that_are_not_shunts_json_and_adds_a_traceback():
    for line in ("plain text", "{not json", '{"a": 1}', "[1, 2]", '{"ts": "x", "message": "m"}'):
        assert render(line) == line
    line = json.dumps({"ts": 1796300531.0, "level": "ERROR", "logger": "shunt.server", "message": "bug",
                       "exc": "Traceback (most recent call last):\nValueError: boom"})
    assert render(line) == f"{_clock(1796300531.0)} ERROR   shunt.server: bug\nTraceback (most recent call last):\nValueError: boom"


def test_logs_of_a_served_home_with_a_log_file(tmp_path, upstream, capsys):
    home = os.environ["SHUNT_HOME"]
    write_home(home, upstream.url, [("a", "oauth")], {"usage_poll_s": 0, "log_file": "shunt.log", "log_format": "json"})
    path = os.path.join(home, "shunt.log")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "shunt.py"), "serve", "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline() == f"shunt: logging to {path} (`shunt logs -f` follows it)\n"
        assert wait_until(lambda: os.path.exists(path) and "listening on" in open(path).read())
        port = int(json.loads(open(path).readline())["message"].split("listening on http://")[1].split()[0]
                   .rsplit(":", 1)[1])
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/messages", headers={"content-type": "application/json"},
                                     data=b'{"model": "claude-test", "max_tokens": 5, "messages": []}')
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        rest = proc.stderr.read()
        proc.stderr.close()
    assert rest == ""  # everything went to the file
    assert main(["logs", "-n", "50"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(" INFO    shunt.access: POST /v1/messages account=a model=claude-test status=200" in line for line in out)
    assert out[-1].endswith("INFO    shunt: stopped; state saved")
    assert main(["logs", "-n", "50", "--json"]) == 0
    access = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"event": "request"' in line]
    assert access[0]["account"] == "a" and access[0]["status"] == 200


class Collected:
    """Lines :func:`show_file` printed, with a wait for how many."""

    def __init__(self):
        self.lines: list[str] = []
        self.cond = threading.Condition()

    def __call__(self, line: str) -> None:
        with self.cond:
            self.lines.append(line)
            self.cond.notify_all()

    def wait_for(self, count: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.lines) >= count, 10)


def test_logs_f_follows_new_lines_through_a_rotation_and_a_truncation(tmp_path):
    path = str(tmp_path / "shunt.log")
    with open(path, "w") as f:
        f.write("old 1\nold 2\n")
    got, stop = Collected(), threading.Event()
    t = threading.Thread(target=show_file, args=(path, 1), kwargs=dict(follow_it=True, raw=False, out=got, stop=stop))
    t.start()
    try:
        assert got.wait_for(1) and got.lines == ["old 2"]
        with open(path, "a") as f:
            f.write("new 1\nnew ")
            f.flush()
            assert got.wait_for(2)
            f.write("2\n" + JSON_LINES[0] + "\n")
        assert got.wait_for(4)
        assert got.lines[1:] == ["new 1", "new 2", f"{_clock(1796300531.25)} INFO    shunt: shunt 1.0 listening"]
        with open(path, "a") as f:
            f.write("last before rotation\n")
        os.rename(path, path + ".1")  # rotated: the old file's last line, then the new file's
        with open(path, "w") as f:
            f.write("after rotation\n")
        assert got.wait_for(6)
        assert got.lines[4:] == ["last before rotation", "after rotation"]
        with open(path, "w") as f:  # truncated in place (logrotate's copytruncate)
            f.write("x\n")
        assert got.wait_for(7) and got.lines[6] == "x"
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()


def test_last_lines_reads_a_large_file_from_its_end(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i} {'y' * 100}\n" for i in range(5000)))
    lines, end = last_lines(str(path), 2)
    assert [line.split()[1] for line in lines] == ["4998", "4999"] and end == path.stat().st_size
    assert last_lines(str(path), 0) == ([], end)


FAKE_JOURNALCTL = textwrap.dedent("""\
    #!{python}
    import json, os, sys
    with open(os.environ["JOURNALCTL_ARGS"], "w") as f:
        json.dump(sys.argv[1:], f)
    for message in ("INFO    shunt: listening", {json_line!r}):
        print(json.dumps({{"__REALTIME_TIMESTAMP": "1796300531250000", "MESSAGE": message}}))
    print(json.dumps({{"__REALTIME_TIMESTAMP": "1796300531250000", "MESSAGE": list(b"WARNING shunt: bytes")}}))
    sys.exit(int(os.environ.get("JOURNALCTL_EXIT", "0")))
    """)


def test_logs_reads_the_journal_of_the_installed_user_unit(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "journalctl"
    fake.write_text(FAKE_JOURNALCTL.format(python=sys.executable, json_line=JSON_LINES[1]))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("JOURNALCTL_ARGS", str(tmp_path / "args.json"))
    unit = os.path.expanduser(USER_UNIT)
    os.makedirs(os.path.dirname(unit))
    open(unit, "w").close()
    assert main(["logs", "-f", "-n", "5"]) == 0
    assert json.load(open(tmp_path / "args.json")) == ["--user", "-u", "shunt", "-o", "json", "--output-fields=MESSAGE",
                                                       "-n", "5", "--no-pager", "-f"]
    assert capsys.readouterr().out.splitlines() == [
        f"{_clock(1796300531.25)} INFO    shunt: listening",
        f"{_clock(1796300532.5)} INFO    shunt.events: account a cooling [id=ab12cd34 upstream_id=req_1]",
        f"{_clock(1796300531.25)} WARNING shunt: bytes"]
    assert main(["logs", "--json"]) == 0
    assert json.load(open(tmp_path / "args.json"))[-2:] == ["50", "--no-pager"]
    assert capsys.readouterr().out.splitlines() == ["INFO    shunt: listening", JSON_LINES[1], "WARNING shunt: bytes"]
    monkeypatch.setenv("JOURNALCTL_EXIT", "4")  # e.g. no permission to read the journal: its status is shunt's
    assert main(["logs"]) == 4
    capsys.readouterr()
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert main(["logs"]) == 1
    assert "journalctl is not installed" in capsys.readouterr().err


def test_where_the_log_is_looked_for():
    def only(*present):
        return lambda p: p in present

    assert find_source("/var/log/shunt.log", only()).path == "/var/log/shunt.log"
    user_unit = os.path.expanduser(USER_UNIT)
    assert find_source(None, only(user_unit, SYSTEM_UNIT)).journal_args == ("--user", "-u", "shunt")
    system = find_source(None, only(SYSTEM_UNIT))
    assert system.journal_args == ("-u", "shunt") and journal_command(system, 7, follow_it=False)[:3] == [
        "journalctl", "-u", "shunt"]
    plist = os.path.expanduser("~/Library/LaunchAgents/sh.shunt.proxy.plist")
    assert find_source(None, only(plist)).path == os.path.expanduser(LAUNCHD_LOG)
    assert find_source(None, only()) is None


def test_logs_without_a_log_file_or_a_service_says_where_the_log_goes(capsys):
    assert main(["logs"]) == 1
    assert "stderr of `shunt serve`" in capsys.readouterr().err
    _home_with_log("missing.log")
    assert main(["logs"]) == 1
    assert "no log yet" in capsys.readouterr().err
    assert main(["logs", "-n", "-1"]) == 2


def test_a_journal_entry_without_a_message_is_skipped():
    assert render_journal_entry('{"__REALTIME_TIMESTAMP": "1"}', raw=False) is None
    assert render_journal_entry("not json", raw=True) is None
    assert render_journal_entry('{"MESSAGE": "no time"}', raw=False) == "no time"
