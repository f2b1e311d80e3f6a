"""Where serve's log goes and how it reads: JSON lines, the journal's stream, a rotated 0600 log file."""

import io
import json
import logging
import os
import stat

import pytest

from shunt_lib.config import ConfigError, Paths, ServerConfig, load_config
from shunt_lib.logsetup import setup_logging, stderr_is_journal
from tests.fakes.upstream import Reply, error_json, message_json
from tests.support import MSG, wait_until


@pytest.fixture
def shunt_logging():
    """``setup_logging`` as ``serve`` calls it; the file handler it opens is closed afterwards."""
    def configure(server: ServerConfig, home: str = "", **kw):
        return setup_logging(False, server, home, **kw)

    yield configure
    for handler in logging.getLogger("shunt").handlers:
        handler.close()


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def test_json_lines_of_a_proxied_request_carry_its_record_and_ids(make_proxy, upstream, events, shunt_logging):
    p = make_proxy(strategy="fill-first", log_format="json", log_file="logs/shunt.log")
    home = os.environ["SHUNT_HOME"]
    path = shunt_logging(load_config(Paths(home)).server, home)
    assert path == os.path.join(home, "logs", "shunt.log")
    upstream.script("tok-a", Reply(status=429, body=error_json("rate_limit_error", "slow down"),
                                   headers={"retry-after": "7", "request-id": "req_cooling"}))
    upstream.script("tok-b", Reply(body=message_json(input_tokens=12, output_tokens=7, cache_read=3),
                                   headers={"content-type": "application/json", "request-id": "req_answer"}))
    assert p.request(body=MSG)[0] == 200
    assert wait_until(lambda: any('"event": "request"' in line for line in _lines(path)))
    lines = [json.loads(line) for line in _lines(path)]
    access = next(d for d in lines if d["event"] == "request")
    assert isinstance(access["ts"], float) and abs(access["ts"] - events.records[-1].created) < 1
    assert {k: access[k] for k in ("level", "logger", "account", "model", "status", "input_tokens", "output_tokens",
                                   "cache_read_tokens", "cache_creation_tokens", "attempts", "held_ms",
                                   "upstream_request_id", "method", "path")} == {
        "level": "INFO", "logger": "shunt.access", "account": "b", "model": "claude-test", "status": 200,
        "input_tokens": 12, "output_tokens": 7, "cache_read_tokens": 3, "cache_creation_tokens": 0, "attempts": 2,
        "held_ms": 0, "upstream_request_id": "req_answer", "method": "POST", "path": "/v1/messages"}
    assert isinstance(access["duration_ms"], int) and len(access["request_id"]) == 8
    assert access["message"].startswith("POST /v1/messages account=b model=claude-test status=200 in=12 out=7")
    cooling = next(d for d in lines if d["event"] == "cooling")
    assert cooling["account"] == "a" and cooling["logger"] == "shunt.events" and cooling["level"] == "INFO"
    assert cooling["request_id"] == access["request_id"] and cooling["upstream_request_id"] == "req_cooling"
    text = "\n".join(_lines(path))
    assert "tok-a" not in text and "tok-b" not in text and "ref-" not in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_a_json_line_keeps_a_traceback_and_any_extra_field(shunt_logging):
    out = io.StringIO()
    shunt_logging(ServerConfig(log_format="json"), stream=out, env={})
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("shunt.server").exception("bug", extra={"event": "bug", "until_s": 12.5, "odd": object()})
    line = json.loads(out.getvalue())
    assert line["event"] == "bug" and line["until_s"] == 12.5 and line["odd"].startswith("<object")
    assert "ValueError: boom" in line["exc"] and "\n" not in out.getvalue().rstrip("\n")


def test_text_lines_on_the_journal_stream_have_no_date_but_a_priority(tmp_path, shunt_logging):
    with open(tmp_path / "stderr", "w+") as stream:
        st = os.fstat(stream.fileno())
        shunt_logging(ServerConfig(), stream=stream, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        logging.getLogger("shunt").warning("on the journal")
        shunt_logging(ServerConfig(), stream=stream, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        logging.getLogger("shunt").warning("stderr redirected elsewhere")
        stream.seek(0)
        journal, redirected = stream.read().splitlines()
    assert journal == "<4>WARNING shunt: on the journal"
    assert redirected.endswith("WARNING shunt: stderr redirected elsewhere") and redirected[:4].isdigit()


def test_the_journal_stream_is_recognised_only_by_its_device_and_inode():
    assert stderr_is_journal("8:1234", (8, 1234))
    assert not stderr_is_journal("8:1234", (8, 1235))
    assert not stderr_is_journal(None, (8, 1234))
    assert not stderr_is_journal("8:1234", None)
    assert not stderr_is_journal("garbage", (8, 1234))


def test_the_log_file_rotates_by_size_into_0600_files(tmp_path, shunt_logging):
    server = ServerConfig(log_file=str(tmp_path / "shunt.log"), log_max_bytes=4096, log_backups=2)
    path = shunt_logging(server, str(tmp_path / "home"))
    assert path == str(tmp_path / "shunt.log")
    log = logging.getLogger("shunt")
    for i in range(200):
        log.info("line %d %s", i, "x" * 60)
    assert os.path.exists(path + ".1") and os.path.exists(path + ".2") and not os.path.exists(path + ".3")
    for name in (path, path + ".1", path + ".2"):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
        assert os.path.getsize(name) <= 4096
    assert _lines(path)[-1].endswith("line 199 " + "x" * 60)


def test_an_externally_rotated_log_file_is_reopened(tmp_path, shunt_logging):
    path = shunt_logging(ServerConfig(log_file="~/logs/shunt.log", log_rotate="external"), str(tmp_path))
    assert path == os.path.join(os.path.expanduser("~"), "logs", "shunt.log")
    log = logging.getLogger("shunt")
    log.info("before")
    os.rename(path, path + ".1")  # what logrotate does
    log.info("after")
    assert _lines(path + ".1")[0].endswith("INFO    shunt: before")
    assert _lines(path)[0].endswith("INFO    shunt: after")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_log_file_that_cannot_be_opened_is_a_config_error(tmp_path, shunt_logging):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="server.log_file: cannot open"):
        shunt_logging(ServerConfig(log_file=str(tmp_path / "file" / "shunt.log")), str(tmp_path))
