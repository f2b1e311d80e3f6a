"""The demo on a terminal that cannot show Unicode, and a conversation that crashes."""

import io
import os
import subprocess
import sys

from shunt_lib.demo import run_demo
from tests.support import ROOT


def test_the_demo_works_in_ascii_on_a_non_utf8_stdout(tmp_path):
    env = dict(os.environ, PYTHONIOENCODING="ascii", LANG="C", LC_ALL="C", PYTHONUTF8="0", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "shunt.py"), "demo", "--seconds", "1"], env=env,
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


def test_a_crashed_conversation_fails_the_demo():
    out = BreaksOnce()
    assert run_demo(duration_s=1, out=out) == 1
    text = out.getvalue()
    assert "conversation 2 crashed: OSError" in text
    assert "0 failed" not in text
