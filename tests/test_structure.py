"""Cheap guards on the package's shape: every module imports alone, without side effects."""

import os
import subprocess
import sys

from tests.support import ROOT

MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "shunt_lib")) if f.endswith(".py"))

CHECK = """
import importlib, os, sys, threading
before = set(os.listdir("/proc/self/fd"))
importlib.import_module(sys.argv[1])
assert threading.active_count() == 1, "a thread started at import"
assert set(os.listdir("/proc/self/fd")) == before, "a file or socket opened at import"
"""


def test_each_module_imports_alone_without_side_effects(tmp_path):
    """An import cycle, or work at import time, fails here: each module in a fresh interpreter (run side by side)."""
    env = dict(os.environ, PYTHONPATH=ROOT, HOME=str(tmp_path), SHUNT_HOME=str(tmp_path / "home"))
    procs = {m: subprocess.Popen([sys.executable, "-c", CHECK, f"shunt_lib.{m}"], env=env, cwd=str(tmp_path),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for m in MODULES}
    failed = {m: p.communicate(timeout=120)[1].strip().splitlines()[-1:] for m, p in procs.items()}
    failed = {m: err for m, err in failed.items() if procs[m].returncode != 0}
    assert not failed, failed
    assert not os.path.exists(tmp_path / "home")


def test_the_readme_module_map_names_every_module():
    """README's "where things live" table stays the map of shunt_lib: each module is named in it."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    missing = [m for m in MODULES if m != "__init__" and f"`{m}.py`" not in readme]
    assert not missing, f"README's module table does not name {missing}"
