"""Progress of a pretraining fit: trials done, of how many, and when it should end.

On a terminal a tqdm bar counts Optuna trials with the elapsed time and an estimate of the
time left, and a line is written above it as each tuning (model x scheme) finishes. When
standard error is not a terminal (a batch job, ``> log 2>&1``) the same facts come as plain
lines: one per finished tuning and one every ``interval`` seconds, so a log shows the fit is
alive and how far it is.

Trials are counted as they finish when the tunings run in this process; tunings run in
worker processes (``tuning.n_jobs`` > 1) or on a Dask cluster count when their study ends.
A study that stops early (``tuning.timeout``) or that resumed counts its whole budget then.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["FitProgress", "current_progress", "format_duration"]

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
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._bar is not None:
            self._bar.close()

    # --- counting ------------------------------------------------------------------------

    def trial_callback(self, study_key: str) -> Callable[[Any, Any], None]:
        """An Optuna callback ``(study, trial)`` counting each finished trial of one study."""

        def callback(study: Any, trial: Any) -> None:
            self._advance(study_key, 1)

        return callback

    def study_done(self, study_key: str) -> None:
        """A study ended: count the rest of its budget (trials not seen one by one)."""
        with self._lock:
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


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
