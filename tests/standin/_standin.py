"""Shared pieces of the FastSurfer / FreeSurfer stand-ins (test doubles, not the engines).

The stand-ins accept the engines' documented arguments, refuse what the engines refuse, write
their output folders with morphml's fixture writer (real FastSurfer / FreeSurfer stats
formats), take time and fail on request. Environment variables steer them:

``MORPHML_STANDIN_SECONDS``  seconds each call sleeps (default 0.1)
``MORPHML_STANDIN_FAIL``     comma-separated ``sid`` or ``sid:step`` (seg, surf, recon) to fail
``MORPHML_STANDIN_RECORD``   file that gets one ``start``/``end`` line per call (``O_APPEND``)
``MORPHML_STANDIN_VERSION``  the version ``--version`` / ``-version`` reports

Each call also prints what the real engines print and morphml must keep out of its logs: the
absolute paths it was given, the user and host names, and the date.
"""

from __future__ import annotations

import datetime
import os
import pwd
import socket
import sys
import time
import zlib
from pathlib import Path
from typing import Any


def writer() -> tuple[Any, Any]:
    """``example_features`` and ``write_subject_stats`` of the simulator (imported on first
    use: the stand-ins that write no stats start without them)."""
    from morphml.simulate import example_features, write_subject_stats

    return example_features, write_subject_stats


def features(sid: str, software: str) -> dict[str, float]:
    """The same realistic values for the same scan, every call."""
    import numpy as np

    example_features, _ = writer()
    rng = np.random.default_rng(zlib.crc32(sid.encode()))
    return dict(example_features(rng, software=software, version="7.4.1"))


def record(event: str, tool: str, sid: str, step: str, device: str = "-") -> None:
    """One line: event tool sid step device pid wall-clock-seconds."""
    path = os.environ.get("MORPHML_STANDIN_RECORD")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        line = f"{event} {tool} {sid} {step} {device} {os.getpid()} {time.time():.6f}\n"
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def should_fail(sid: str, step: str) -> bool:
    wanted = {w.strip() for w in os.environ.get("MORPHML_STANDIN_FAIL", "").split(",")}
    return sid in wanted or f"{sid}:{step}" in wanted


def pause() -> None:
    time.sleep(float(os.environ.get("MORPHML_STANDIN_SECONDS", "0.1")))


def chatter(paths: list[str]) -> None:
    """What the engines print that is not fit for morphml's logs."""
    now = datetime.datetime.now(datetime.timezone.utc)
    print(now.strftime("%a %b %d %H:%M:%S UTC %Y"))
    print(now.strftime("%a, %d %b %Y %H:%M:%S +0000"))
    print(f"Linux {socket.gethostname()} 6.1.0 x86_64 GNU/Linux")
    print(f"USER {pwd.getpwuid(os.getuid()).pw_name}")
    print(f"HOME {os.path.expanduser('~')}")
    for path in paths:
        print(f"using {path}")
    sys.stdout.flush()


def placeholder(path: Path) -> None:
    """A stand-in for an image the real engine writes (morphml only checks it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"morphml stand-in\n")
