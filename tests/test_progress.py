"""The fit's progress: trial counters with time left, a bar on a terminal, lines in a log."""

from __future__ import annotations

import io
import os
import re
import time

from morphml.pipelines._progress import (
    FitProgress,
    TrialCounter,
    current_progress,
    format_duration,
)


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with FitProgress(12, 4, stream=out, tty=False, interval=0.05) as progress:
        assert current_progress() is progress
        callback = progress.trial_callback("age/ridge/kfold/fold0")
        for _ in range(2):
            callback(None, None)
        time.sleep(0.2)  # a few heartbeat lines
        progress.study_done("age/ridge/kfold/fold0")  # 2 counted + 2 left of its budget
        progress.finished("age/ridge/kfold", 3.2)
        progress.study_done("age/ridge/kfold/fold1")  # ran elsewhere: the whole budget
        assert progress.done == 8
    assert current_progress() is None
    text = out.getvalue()
    assert text.startswith("tuning: 12 Optuna trials to run\n")
    assert re.search(r"\.\.\. 2/12 trials \(17%\), \d+ s elapsed, about \d+ s left", text)
    assert "  age/ridge/kfold: tuned and scored in 3 s [4/12 trials (33%)" in text


def test_counts_never_exceed_budgets() -> None:
    out = io.StringIO()
    with FitProgress(4, 2, stream=out, tty=False, interval=60) as progress:
        callback = progress.trial_callback("a")
        for _ in range(5):  # a resumed study may report more trials than its budget
            callback(None, None)
        progress.study_done("a")
        progress.study_done("b")
        progress.study_done("c")  # more studies than planned
        assert progress.done == 4
        assert progress.status().startswith("4/4 trials (100%)")
        assert "left" not in progress.status()


def test_bar_on_a_terminal() -> None:
    out = io.StringIO()
    with FitProgress(6, 3, stream=out, tty=True) as progress:
        callback = progress.trial_callback("sex/logistic/final")
        callback(None, None)
        progress.finished("sex/logistic/kfold", 1.0)
        progress.study_done("sex/logistic/final")
    text = out.getvalue()
    assert "tuning" in text and "3/6" in text and "trial" in text
    assert "sex/logistic/kfold: tuned and scored in 1 s\n" in text  # no status on a bar


def test_format_duration() -> None:
    assert format_duration(42) == "42 s"
    assert format_duration(600) == "10.0 min"
    assert format_duration(3 * 3600) == "3.0 h"


def _tune_elsewhere(counter: TrialCounter, study_key: str, trials: int) -> int:
    """A worker process's tuning: each finished trial calls the counter's callbacks."""
    assert current_progress() is None  # not the fit's process
    (callback,) = counter(study_key)
    for _ in range(trials):
        callback(None, None)
    return trials


def test_trials_in_worker_processes_count_as_they_finish() -> None:
    from joblib import Parallel, delayed

    out = io.StringIO()
    with FitProgress(12, 4, stream=out, tty=False, interval=60) as progress:
        counter = progress.trial_counter()
        done = Parallel(n_jobs=2)(
            delayed(_tune_elsewhere)(counter, f"age/xgboost/kfold/fold{k}", 3) for k in range(2)
        )
        assert done == [3, 3]
        progress.read_inbox()  # what the reader thread does every second
        assert progress.done == 6  # counted trial by trial, before any study ended
        progress.study_done("age/xgboost/kfold/fold0")  # the rest of its budget: 1
        progress.read_inbox()
        assert progress.done == 7
        inbox = counter.inbox
        assert inbox is not None and os.path.exists(inbox)
    assert not os.path.exists(inbox)  # removed when the fit ends


def test_a_trial_counter_in_the_fits_own_process_counts_directly() -> None:
    out = io.StringIO()
    with FitProgress(4, 4, stream=out, tty=False, interval=60) as progress:
        (callback,) = progress.trial_counter()("a")
        callback(None, None)
        assert progress.done == 1
    assert TrialCounter()("a") == []  # no fit reporting progress: no callbacks
