"""Worker processes die with the process that started them (no orphan keeps the port after a kill -9)."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux; a no-op elsewhere).

    Only a process started by :mod:`multiprocessing` (a uvicorn ``--workers`` worker) is affected; when
    the supervisor is already gone (it died before the call), the worker signals itself.
    """
    supervisor = multiprocessing.parent_process()
    if not sys.platform.startswith("linux") or supervisor is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        return
    if os.getppid() != supervisor.pid:  # the supervisor died before the prctl
        os.kill(os.getpid(), sig)
