"""Run one engine step and record its outcome (a small stand-alone program).

``morphml process`` starts ``python -I _step.py`` for every step and writes a JSON spec to its
standard input. The program

1. takes the step's lock (``flock``; the engine process inherits it, so a step whose
   ``morphml process`` was killed keeps its lock until the engine itself exits);
2. returns at once when the step's marker says it is done (resume, or a duplicate task);
3. starts from an empty subject folder when an earlier attempt of this step left one behind,
   and refuses a folder morphml did not make (unless it already holds finished outputs, which
   are then recorded as done);
4. runs the engine, copying its output line by line into the step's log with host paths,
   user and host names and dates replaced (``<bids>``, ``<out>``, ``<home>``, ``<user>``,
   ``<host>``, ``<date>``);
5. writes the marker (status, exit status, seconds, missing outputs, the log's last lines)
   atomically, even after a SIGTERM/SIGINT (forwarded to the engine first).

It imports nothing from morphml, so it keeps working when the process that started it is
gone; the marker is what that process, or the next run, reads.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*"
_DATES = re.compile(
    "|".join(
        [
            # 2024-01-15, 2024-01-15T10:30:00+01:00, 2024-01-15 10:30:00.123
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
            # FreeSurfer: 2024/01/15-10:32:07-GMT, 2024/01/15 10:30:00
            r"\b\d{4}/\d{2}/\d{2}(?:[-_ ]\d{2}:\d{2}(?::\d{2})?(?:-[A-Z]{2,5})?)?",
            # date: Mon Jan 15 10:30:00 UTC 2024; date -R: Mon, 15 Jan 2024 10:30:00 +0000
            rf"\b{_DAY},? +(?:\d{{1,2}} +{_MONTH}|{_MONTH} +\d{{1,2}})"
            r"(?: +\d{4})?(?: +\d{1,2}:\d{2}(?::\d{2})?)?(?: +(?:[A-Z]{2,5}|[+-]\d{4}))?"
            r"(?: +\d{4})?",
            # 15 Jan 2024, Jan 15 2024, Jan 15, 2024
            rf"\b\d{{1,2}} +{_MONTH} +\d{{4}}",
            rf"\b{_MONTH} +\d{{1,2}},? +\d{{4}}",
        ]
    )
)


def scrubber(pairs: list[tuple[str, str]]) -> Any:
    """A function that removes host paths, user and host names and dates from a line."""
    replacements = sorted(((p, t) for p, t in pairs if p), key=lambda pt: -len(pt[0]))
    users = set(_user_names())
    words = [re.escape(name) for name in _identity_words()]
    word_re = re.compile(rf"(?<![\w.-])(?:{'|'.join(words)})(?![\w-])") if words else None

    def scrub(line: str) -> str:
        for path, token in replacements:
            line = line.replace(path, token)
        if word_re is not None:
            line = word_re.sub(lambda m: "<user>" if m.group(0) in users else "<host>", line)
        return _DATES.sub("<date>", line)

    return scrub


def _user_names() -> list[str]:
    names = {os.environ.get("USER", ""), os.environ.get("LOGNAME", "")}
    with contextlib.suppress(Exception):
        import pwd

        names.add(pwd.getpwuid(os.getuid()).pw_name)
    return [n for n in names if len(n) >= 2]


def _identity_words() -> list[str]:
    hosts = set()
    with contextlib.suppress(Exception):
        host = socket.gethostname()
        hosts.update({host, host.split(".")[0]})
    with contextlib.suppress(Exception):
        hosts.add(socket.getfqdn())
    names = set(_user_names()) | {h for h in hosts if len(h) >= 2 and h != "localhost"}
    return sorted(names, key=len, reverse=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the step described by ``spec``; return its marker."""
    marker_path = Path(spec["marker"])
    started_path = Path(spec["started"])
    log_path = Path(spec["log"])
    subject_dir = Path(spec["subject_dir"])
    marker_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = dict(spec["meta"])
    lock_fd = os.open(spec["lock"], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # held until this program and the engine exit
    previous = _read_json(marker_path)
    if previous is not None and previous.get("status") == "done":
        return {**previous, "already_done": True}
    attempt = int((previous or {}).get("attempt", 0)) + 1
    if spec["clean"]:
        if started_path.exists():
            shutil.rmtree(subject_dir, ignore_errors=True)
        elif subject_dir.exists():
            missing = [p for p in spec["complete_outputs"] if not (subject_dir / p).exists()]
            if not missing:
                marker = {**base, "status": "done", "found_existing": True, "attempt": attempt,
                          "returncode": None, "seconds": 0.0}  # fmt: skip
                _write_json(marker_path, marker)
                return marker
            marker = {
                **base, "status": "failed", "attempt": attempt, "returncode": None,
                "seconds": 0.0, "missing_outputs": missing,
                "reason": "its output folder exists, holds no finished run and was not made "
                "by morphml; move it away (or delete it) and run again",
                "tail": [],
            }  # fmt: skip
            _write_json(marker_path, marker)
            return marker
    _write_json(started_path, {**base, "attempt": attempt})
    scrub = scrubber([(str(p[0]), str(p[1])) for p in spec["scrub"]])
    tail: collections.deque[str] = collections.deque(maxlen=int(spec.get("tail_lines", 20)))
    env = dict(os.environ)
    env.update(spec["env"])
    interrupted: list[int] = []
    start = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"# morphml step {base.get('sid')} {base.get('step')}: "
                  f"{scrub(spec['display'])}\n")  # fmt: skip
        try:
            child = subprocess.Popen(
                spec["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=env, text=True, errors="replace",
                pass_fds=(lock_fd,),
            )  # fmt: skip
        except OSError as err:
            line = scrub(f"cannot start {spec['argv'][0]}: {err.strerror or err}")
            log.write(line + "\n")
            marker = {**base, "status": "failed", "attempt": attempt, "returncode": None,
                      "seconds": 0.0, "reason": line, "tail": [line]}  # fmt: skip
            _write_json(marker_path, marker)
            return marker

        def forward(signum: int, _frame: Any) -> None:
            interrupted.append(signum)
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, forward)
        for raw in child.stdout or ():
            line = scrub(raw.rstrip("\n"))
            log.write(line + "\n")
            tail.append(line)
        returncode = child.wait()
    seconds = round(time.monotonic() - start, 3)
    missing = [p for p in spec["outputs"] if not (subject_dir / p).exists()]
    ok = returncode == 0 and not missing and not interrupted
    marker = {
        **base, "status": "done" if ok else "failed", "attempt": attempt,
        "returncode": returncode, "seconds": seconds,
    }  # fmt: skip
    if not ok:
        if interrupted:
            reason = f"interrupted by signal {interrupted[0]}"
        elif returncode != 0:
            reason = f"exit status {returncode}"
        else:
            reason = "exit status 0 but outputs are missing: " + ", ".join(missing)
        marker.update({"reason": reason, "missing_outputs": missing, "tail": list(tail)})
    _write_json(marker_path, marker)
    if ok:
        started_path.unlink(missing_ok=True)
    return marker


def main() -> None:
    spec = json.load(sys.stdin)
    marker = run(spec)
    json.dump(marker, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
