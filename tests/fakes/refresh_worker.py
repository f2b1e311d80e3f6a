"""Run one token refresh in a separate process (for cross-process and crash tests).

Usage: python -m tests.fakes.refresh_worker HOME NAME TOKEN_URL MODE [GO_FILE]

MODE: ``race`` waits for GO_FILE, then refreshes proactively and prints the resulting access token;
``kill-after-put`` SIGKILLs itself right after the rotated pair is written;
``kill-before-fsync`` / ``kill-before-replace`` / ``kill-after-replace`` SIGKILL inside the atomic write.
"""

import os
import signal
import sys
import time

from shunt_lib import fsutil
from shunt_lib.credentials import CredentialStore
from shunt_lib.oauth import TokenManager


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def main():
    home, name, token_url, mode = sys.argv[1:5]
    store = CredentialStore(os.path.join(home, "credentials.json"))
    tm = TokenManager(store, store.load(), token_url=token_url)
    if mode == "race":
        go = sys.argv[5]
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.005)
        r = tm.refresh(name, margin_s=300)
        print(r.status, r.credential.access_token if r.credential else "-", flush=True)
        return
    if mode == "kill-after-put":
        real_put = store.put

        def put(n, cred):
            real_put(n, cred)
            die()

        store.put = put
    else:
        step = mode.removeprefix("kill-")
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            if step == "before-fsync":
                die()
            return real_fsync(fd)

        def replace(a, b):
            if step == "before-replace":
                die()
            real_replace(a, b)
            if step == "after-replace":
                die()

        fsutil.os.fsync = fsync
        fsutil.os.replace = replace
    tm.refresh(name, force=True)
    print("not killed", flush=True)


if __name__ == "__main__":
    main()
