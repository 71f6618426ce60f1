"""Tells herd an instance is ready (`ready = { mode = "notify" }`): `READY=1` on the pipe herd
hands over in HERD_READY_FD."""

import os


def ready():
    fd = os.environ.get("HERD_READY_FD")
    if fd and fd.isdigit():
        os.write(int(fd), b"READY=1\n")
