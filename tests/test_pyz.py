"""``shunt build-pyz``: the single file is reproducible, pure Python, and runs shunt in a virtualenv
that has none of shunt's dependencies (``--version``, ``demo``, ``serve`` answering ``/health``, TLS
verification from certifi's bundle inside the zip). ``--with-redis``: ``shunt-redis.pyz`` joins a
cluster on a real Redis, where the plain file refuses a ``[cluster]`` with the fix."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import tomllib
import zipfile

import pytest

from shunt_lib import __version__
from shunt_lib.cli import main
from shunt_lib.pyz import (DEFAULT_EPOCH_S, REDIS_REQUIREMENTS, RUNTIME_REQUIREMENTS, SHEBANG, PyzError, build_pyz,
                           select_files, source_date_epoch, wanted_names)
from tests.support import ROOT, ServeProcess

RUN_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    """The pyz, built once for this module by the command a user runs."""
    path = str(tmp_path_factory.mktemp("pyz") / "shunt.pyz")
    assert main(["build-pyz", "--output", path]) == 0
    return path


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """``(python, env, cwd)``: a virtualenv made without pip, so it has none of shunt's dependencies."""
    where = tmp_path_factory.mktemp("bare")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where / "venv")], check=True, timeout=RUN_TIMEOUT_S)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HOME"] = str(where / "home")  # no user site-packages either
    python = str(where / "venv" / "bin" / "python")
    probe = subprocess.run([python, "-c", "import requests"], env=env, cwd=str(where), capture_output=True, text=True,
                           timeout=RUN_TIMEOUT_S)
    assert probe.returncode != 0 and "No module named 'requests'" in probe.stderr
    return python, env, str(where)


def run(bare, *args: str, **env) -> subprocess.CompletedProcess:
    python, base_env, cwd = bare
    return subprocess.run([python, *args], env={**base_env, **env}, cwd=cwd, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)


def test_rebuilding_gives_the_same_bytes(pyz, tmp_path):
    again = str(tmp_path / "again.pyz")
    build_pyz(again, environ={})
    assert open(again, "rb").read() == open(pyz, "rb").read()
    assert os.stat(pyz).st_mode & 0o777 == 0o755


def test_source_date_epoch_sets_every_entry_time(tmp_path):
    target = str(tmp_path / "dated.pyz")
    build_pyz(target, environ={"SOURCE_DATE_EPOCH": "1700000000"})  # 2023-11-14 22:13:20 UTC
    with zipfile.ZipFile(target) as archive:
        assert {info.date_time for info in archive.infolist()} == {(2023, 11, 14, 22, 13, 20)}
    assert source_date_epoch({}) == DEFAULT_EPOCH_S
    assert source_date_epoch({"SOURCE_DATE_EPOCH": "0"}) == DEFAULT_EPOCH_S  # a zip cannot hold times before 1980
    with pytest.raises(PyzError, match="SOURCE_DATE_EPOCH"):
        source_date_epoch({"SOURCE_DATE_EPOCH": "yesterday"})


def test_contents_are_pure_python_with_fixed_entries(pyz):
    assert open(pyz, "rb").read(len(SHEBANG)) == b"#!/usr/bin/env python3\n"
    with zipfile.ZipFile(pyz) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        assert names == sorted(names)
        assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {info.external_attr >> 16 for info in infos} == {0o100644}
        assert not [n for n in names if n.endswith((".pyc", ".so", ".pyd")) or "__pycache__" in n]
        assert not [n for n in names if n.endswith(("/RECORD", "/INSTALLER", "/direct_url.json"))]
        tops = {n.split("/", 1)[0] for n in names}
        assert {"__main__.py", "shunt_lib", "requests", "urllib3", "idna", "certifi", "charset_normalizer"} <= tops
        assert "certifi/cacert.pem" in names
        assert archive.read("shunt_lib/__init__.py") == open(os.path.join(ROOT, "shunt_lib", "__init__.py"), "rb").read()
        web = sorted(os.listdir(os.path.join(ROOT, "shunt_lib", "web")))
        assert [n for n in names if n.startswith("shunt_lib/web/")] == [f"shunt_lib/web/{f}" for f in web]


def test_runtime_requirements_are_pyprojects_dependencies():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    assert sorted(wanted_names(deps, lambda name: True)) == sorted(RUNTIME_REQUIREMENTS)


def test_redis_requirements_are_pyprojects_redis_extra():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["redis"]
    assert sorted(wanted_names(extra, lambda name: True)) == sorted(REDIS_REQUIREMENTS)


def test_requirements_of_older_pythons_the_pyz_runs_on_are_taken_whatever_python_builds_it():
    reqs = ["async-timeout>=4.0.3; python_full_version < '3.11.3'", 'tomli; python_version < "3.11"',
            'exceptiongroup; python_version <= "3.11"', 'backport; python_version < "3.10"']
    assert wanted_names(reqs, lambda name: False) == ["async-timeout", "exceptiongroup"]


def test_requirements_for_extras_are_left_out():
    reqs = ['charset_normalizer<4,>=2', 'PySocks!=1.5.7,>=1.5.6; extra == "socks"', 'tomli; python_version < "3.11"',
            'zstandard>=0.18; platform_python_implementation == "CPython"']
    assert wanted_names(reqs, lambda name: name == "zstandard") == ["charset_normalizer", "zstandard"]


def test_compiled_modules_are_dropped_only_beside_their_source():
    files = ["pkg/__init__.py", "pkg/md.py", "pkg/md.cpython-311-x86_64-linux-gnu.so", "81d2__mypyc.cpython-311-x86_64-linux-gnu.so",
             "pkg/__pycache__/md.cpython-311.pyc", "../../../bin/tool", "pkg-1.0.dist-info/RECORD",
             "pkg-1.0.dist-info/INSTALLER", "pkg-1.0.dist-info/METADATA", "pkg-1.0.dist-info/licenses/LICENSE",
             "pkg/data.pem"]
    assert select_files("pkg", files) == ["pkg/__init__.py", "pkg/md.py", "pkg-1.0.dist-info/METADATA",
                                          "pkg-1.0.dist-info/licenses/LICENSE", "pkg/data.pem"]
    with pytest.raises(PyzError, match="pkg/speedups.abi3.so"):
        select_files("pkg", ["pkg/__init__.py", "pkg/speedups.abi3.so"])


def test_version_in_a_bare_virtualenv(pyz, bare):
    done = run(bare, pyz, "--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"shunt {__version__}"), done.stderr


def test_requests_verifies_tls_with_the_bundle_inside_the_pyz(pyz, bare):
    """certifi extracts cacert.pem from the zip to a file; requests' default bundle is that file and loads."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import requests, requests.utils, charset_normalizer.md;"
            "print(json.dumps([requests.__file__, charset_normalizer.md.__file__, requests.utils.DEFAULT_CA_BUNDLE_PATH]))")
    done = run(bare, "-c", code, pyz)
    assert done.returncode == 0, done.stderr
    requests_file, md_file, bundle = json.loads(done.stdout)
    assert requests_file.startswith(pyz + os.sep) and md_file == os.path.join(pyz, "charset_normalizer", "md.py")
    assert not bundle.startswith(pyz)  # a real file, gone again when that process ended
    with zipfile.ZipFile(pyz) as archive:
        pem = archive.read("certifi/cacert.pem").decode("ascii")
    assert len(ssl.create_default_context(cadata=pem).get_ca_certs()) > 50


def test_demo_in_a_bare_virtualenv(pyz, bare):
    done = run(bare, pyz, "demo", "--seconds", "2", PYTHONIOENCODING="utf-8")
    assert done.returncode == 0, done.stderr
    assert "Summary" in done.stdout


def test_serve_in_a_bare_virtualenv_answers_health_and_the_dashboard(pyz, bare, tmp_path):
    python, env, cwd = bare
    serve = ServeProcess(dict(env, SHUNT_HOME=str(tmp_path / "home")), shunt=[python, pyz], cwd=cwd)
    answers = {}
    try:
        for path in ("/health", "/", "/dashboard.js"):
            conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=10)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                answers[path] = resp.status, resp.getheader("content-type"), resp.read()
            finally:
                conn.close()
    finally:
        rc = serve.stop(signal.SIGTERM)
    assert answers["/health"][0] == 200, answers["/health"]
    with zipfile.ZipFile(pyz) as archive:  # the page is read from inside the zip
        assert answers["/"] == (200, "text/html; charset=utf-8", archive.read("shunt_lib/web/dashboard.html"))
        assert answers["/dashboard.js"][2] == archive.read("shunt_lib/web/dashboard.js")
    assert rc == 0, serve.log


@pytest.fixture(scope="module")
def redis_pyz(tmp_path_factory):
    """``shunt-redis.pyz``, built once for this module by the command a user runs (its default name)."""
    where = tmp_path_factory.mktemp("redis-pyz")
    cwd = os.getcwd()
    os.chdir(where)
    try:
        assert main(["build-pyz", "--with-redis"]) == 0
    finally:
        os.chdir(cwd)
    return str(where / "dist" / "shunt-redis.pyz")


def _cluster_home(path, url: str) -> str:
    path.mkdir()
    (path / "config.toml").write_text(f'[cluster]\nredis_url = "{url}"\ncluster_name = "pyz"\n')
    return str(path)


def test_the_redis_variant_is_reproducible_and_pure_python(redis_pyz, tmp_path):
    again = str(tmp_path / "again.pyz")
    built = build_pyz(again, environ={}, with_redis=True)
    assert open(again, "rb").read() == open(redis_pyz, "rb").read()
    assert {"redis", "async-timeout"} <= {name for name, _ in built.bundled}
    with zipfile.ZipFile(redis_pyz) as archive:
        names = archive.namelist()
    assert "redis/__init__.py" in names and "async_timeout/__init__.py" in names
    assert not [n for n in names if n.endswith((".pyc", ".so", ".pyd")) or "__pycache__" in n]


def test_the_redis_variant_joins_a_cluster_in_a_bare_virtualenv(redis_pyz, bare, redis_server, tmp_path):
    python, env, cwd = bare
    home = _cluster_home(tmp_path / "home", redis_server.url)
    serve = ServeProcess(dict(env, SHUNT_HOME=home), shunt=[python, redis_pyz], cwd=cwd)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=10)
        try:
            conn.request("GET", "/status")
            status = json.loads(conn.getresponse().read())
        finally:
            conn.close()
    finally:
        rc = serve.stop(signal.SIGTERM)
    assert status["cluster"]["state"] == "ok" and status["cluster"]["name"] == "pyz", status["cluster"]
    assert rc == 0, serve.log


def test_the_plain_pyz_refuses_a_cluster_with_the_fix(pyz, bare, tmp_path):
    home = _cluster_home(tmp_path / "home", "redis://127.0.0.1:1/0")
    done = run(bare, pyz, "serve", "--port", "0", SHUNT_HOME=home)
    assert done.returncode == 2, done.stderr
    assert "pip install 'shunt[redis]'" in done.stderr and "shunt-redis.pyz" in done.stderr
    assert "Traceback" not in done.stderr
