"""Progress of a pretraining fit: trials done, of how many, and when it should end.

On a terminal a tqdm bar counts Optuna trials with the elapsed time and an estimate of the
time left, and a line is written above it as each tuning (model x scheme) finishes. When
standard error is not a terminal (a batch job, ``> log 2>&1``) the same facts come as plain
lines: one per finished tuning and one every ``interval`` seconds, so a log shows the fit is
alive and how far it is.

Trials are counted as they finish, in this process and in worker processes
(``tuning.n_jobs`` > 1): a :class:`TrialCounter` handed to the workers appends one line per
finished trial to a small file the fit's progress reads every second (it holds study names
such as ``age/xgboost/kfold/fold3``, nothing about any person, and is removed at the end).
Trials run on a Dask cluster count when their study ends. A study that stops early
(``tuning.timeout``) or that resumed counts the rest of its budget then.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["FitProgress", "TrialCounter", "current_progress", "format_duration"]

#: the progress of the fit running in this process (None in worker processes)
_CURRENT: FitProgress | None = None


def current_progress() -> FitProgress | None:
    """The progress of the fit running in this process, if it reports one."""
    return _CURRENT


def format_duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class FitProgress:
    """Count trials of every tuning of a fit and report them (see the module docstring).

    Parameters
    ----------
    total_trials : int
        Trials of the whole fit (studies x trials per study).
    trials_per_study : int
        The budget of one study (what a study adds when it ends uncounted).
    stream : text file, optional
        Where to write (standard error by default).
    tty : bool, optional
        Draw a bar (True) or write plain lines (False); by default whether ``stream`` is a
        terminal.
    interval : float, default 30
        Seconds between plain lines when not on a terminal.
    """

    def __init__(
        self,
        total_trials: int,
        trials_per_study: int,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 30.0,
    ) -> None:
        self.total = max(int(total_trials), 0)
        self.per_study = max(int(trials_per_study), 0)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(tty) if tty is not None else _isatty(self.stream)
        self.interval = float(interval)
        self.done = 0
        self.started = time.monotonic()
        self._counted: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar: Any = None
        self._thread: threading.Thread | None = None
        self._finished: set[str] = set()
        self._inbox: str | None = None  # the file worker processes append trials to
        self._read = 0
        self._inbox_lock = threading.Lock()  # the reader thread and study_done both read
        self._reader: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> FitProgress:
        global _CURRENT
        _CURRENT = self
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total, unit="trial", desc="tuning", file=self.stream,
                dynamic_ncols=True, smoothing=0.05,
            )  # fmt: skip
        else:
            self.line(f"tuning: {self.total} Optuna trials to run")
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        global _CURRENT
        _CURRENT = None
        self._stop.set()
        for thread in (self._thread, self._reader):
            if thread is not None:
                thread.join(timeout=2)
        if self._inbox is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._inbox)
        if self._bar is not None:
            self._bar.close()

    # --- worker processes ----------------------------------------------------------------

    def trial_counter(self) -> TrialCounter:
        """Optuna callbacks for tunings run here or in worker processes (see the module
        docstring); the file they append to is read every second until the fit ends."""
        if self._inbox is None:
            handle, self._inbox = tempfile.mkstemp(prefix="morphml-progress-")
            os.close(handle)
            self._reader = threading.Thread(target=self._read_inbox, daemon=True)
            self._reader.start()
        return TrialCounter(self._inbox)

    def _read_inbox(self) -> None:
        while not self._stop.wait(1.0):
            self.read_inbox()

    def read_inbox(self) -> None:
        """Count the trials worker processes reported since the last read."""
        if self._inbox is None:
            return
        with self._inbox_lock:
            try:
                with open(self._inbox, "rb") as handle:
                    handle.seek(self._read)
                    data = handle.read()
            except OSError:
                return
            complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
            self._read += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            with self._lock:
                finished = line in self._finished
            if not finished:  # a study already counted whole is not counted again
                self._advance(line, 1)

    # --- counting ------------------------------------------------------------------------

    def trial_callback(self, study_key: str) -> Callable[[Any, Any], None]:
        """An Optuna callback ``(study, trial)`` counting each finished trial of one study."""

        def callback(study: Any, trial: Any) -> None:
            self._advance(study_key, 1)

        return callback

    def study_done(self, study_key: str) -> None:
        """A study ended: count the rest of its budget (trials not seen one by one)."""
        self.read_inbox()
        with self._lock:
            self._finished.add(study_key)
            counted = self._counted.pop(study_key, 0)
        rest = max(self.per_study - counted, 0)
        if rest:
            self._advance(None, rest)

    def _advance(self, study_key: str | None, n: int) -> None:
        with self._lock:
            if study_key is not None:
                seen = self._counted.get(study_key, 0)
                n = min(n, max(self.per_study - seen, 0))  # resumed studies: never over
                self._counted[study_key] = seen + n
            n = min(n, self.total - self.done)
            self.done += n
        if n and self._bar is not None:
            self._bar.update(n)

    # --- reporting -----------------------------------------------------------------------

    def status(self) -> str:
        """``130/480 trials (27%), 2.0 min elapsed, about 5.4 min left``."""
        elapsed = time.monotonic() - self.started
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = f"{self.done}/{self.total} trials ({pct:.0f}%), {format_duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            left = elapsed / self.done * (self.total - self.done)
            text += f", about {format_duration(left)} left"
        return text

    def line(self, text: str) -> None:
        """Write one line (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def finished(self, what: str, seconds: float) -> None:
        """Report a finished tuning (``age/ridge/kfold``) and, off a terminal, the status."""
        tail = "" if self.tty else f" [{self.status()}]"
        self.line(f"  {what}: tuned and scored in {seconds:.0f} s{tail}")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.line(f"  ... {self.status()}")


class TrialCounter:
    """``counter(study_key)`` -> the Optuna callbacks that count the study's trials.

    Picklable, so tunings in worker processes take it along: in the fit's own process the
    callbacks count directly, in a worker they append the study's name to ``inbox`` (one
    line per finished trial), which the fit's :class:`FitProgress` reads.
    """

    def __init__(self, inbox: str | None = None) -> None:
        self.inbox = inbox

    def __call__(self, study_key: str) -> list[Callable[[Any, Any], None]]:
        tracker = current_progress()
        if tracker is not None:
            return [tracker.trial_callback(study_key)]
        if self.inbox is None:
            return []
        inbox, line = self.inbox, (study_key + "\n").encode("utf-8")

        def callback(study: Any, trial: Any) -> None:
            with contextlib.suppress(OSError):  # progress must never stop a fit
                fd = os.open(inbox, os.O_WRONLY | os.O_APPEND)
                try:
                    os.write(fd, line)  # one short append: never interleaved with others
                finally:
                    os.close(fd)

        return [callback]


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
