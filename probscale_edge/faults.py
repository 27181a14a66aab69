"""Fault injection for the interrupt tests: ``PROBSCALE_EDGE_FAULT=<point>`` kills the process (SIGKILL, so
no cleanup code runs) when it reaches that point. Points: the build's stage boundaries, ``train-step:N``."""

from __future__ import annotations

import os


def fault(point: str) -> None:
    if os.environ.get("PROBSCALE_EDGE_FAULT") == point:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
