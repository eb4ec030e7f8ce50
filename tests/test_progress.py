"""The fit's progress: trial counters with time left, a bar on a terminal, lines in a log."""

from __future__ import annotations

import io
import re
import time

from morphml.pipelines._progress import FitProgress, current_progress, format_duration


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
