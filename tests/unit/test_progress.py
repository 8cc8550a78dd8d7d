"""Stage-weighted progress tells the truth (issue 13, item 7).

PatchCore's ``fit`` stage sat at 0% for ~76 s and tqdm's ETA showed 12 minutes for ~50 s of
work: the bar was the worker's own fraction of each stage, and its ETA the rate of the whole.
Now the percentage is weighted by stage, and the only time left shown is the current stage's,
measured on itself.
"""

from __future__ import annotations

import io
import re

import pytest

from lvkit.progress import StageProgress, resolve_mode


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(events, weights, **kwargs):
    clock, lines = Clock(), []
    p = StageProgress("train", weights, progress="lines", write=lines.append, clock=clock, **kwargs)
    for seconds, stage, fraction in events:
        clock.now = seconds
        p.update({"stage": stage, "progress": fraction})
    return p, lines


def test_percent_is_weighted_by_stage():
    p, _ = _run([(0, "load", 0.0), (1, "load", 1.0), (1, "fit", 0.0), (5, "fit", 0.5)], {"load": 1, "fit": 9})
    assert p.percent == pytest.approx(100 * (1 + 4.5) / 10)
    p.close()
    assert p.percent == 100


def test_no_time_left_until_the_stage_measures_itself():
    clock = Clock()
    p = StageProgress("train", {"fit": 1}, progress=False, clock=clock)
    p.update({"stage": "fit", "progress": 0.0})
    clock.now = 60.0  # a stage that reports nothing (start and end only) gets no estimate
    p.update({"stage": "fit", "progress": 0.0})
    assert p.stage_left() is None
    clock.now = 61.0
    p.update({"stage": "fit", "progress": 0.01})  # under 5%: too little to measure a rate
    assert p.stage_left() is None
    clock.now = 80.0
    p.update({"stage": "fit", "progress": 0.25})
    assert p.stage_left() == pytest.approx(80 * 0.75 / 0.25)


def test_lines_give_each_stage_its_time_and_a_heartbeat():
    events = [(0, "load", 0.0), (2, "load", 1.0), (2, "fit", 0.0), (40, "fit", 0.5), (80, "fit", 1.0),
              (80, "predict", 0.0), (90, "done", 1.0)]
    p, lines = _run(events, {"load": 1, "fit": 8, "predict": 1}, heartbeat=30.0)
    p.close()
    p.close()
    text = "\n".join(lines)
    assert "train: load done in 2.0 s (10%)" in text
    assert "train: fit 50% (38 s, about 0:38 left in this stage)" in text
    assert "train: fit done in 78.0 s (90%)" in text
    assert "train: predict done in 10.0 s (100%)" in text
    assert text.count("finished in 90.0 s") == 1
    assert p.timings == {"load": 2.0, "fit": 78.0, "predict": 10.0}


def test_the_bar_shows_stage_and_elapsed_but_no_overall_eta(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    clock = Clock()
    with StageProgress("train patchcore", {"extract": 1, "fit": 3}, progress="bar", clock=clock) as p:
        p.update({"stage": "extract", "progress": 1.0})
        p.update({"stage": "fit", "progress": 0.0})
        clock.now = 30.0
        p.update({"stage": "fit", "progress": 0.5})
    shown = stream.getvalue()
    assert re.search(r"train patchcore:\s+62%.*fit 50% · 0:30 elapsed, about 0:30 left in fit", shown)
    assert "<" not in shown and "?" not in shown  # no tqdm rate/ETA fields


def test_a_failed_run_does_not_print_finished():
    lines: list[str] = []
    with pytest.raises(RuntimeError), StageProgress("train", {"fit": 1}, progress="lines", write=lines.append) as p:
        p.update({"stage": "fit", "progress": 0.2})
        raise RuntimeError("boom")
    assert not any("finished" in line or "done" in line for line in lines)


def test_mode_follows_the_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    assert resolve_mode(True) == "bar"
    monkeypatch.setattr("sys.stderr", io.StringIO())  # Jupyter, logs: stderr is not a terminal
    assert resolve_mode(True) == "lines"
    assert resolve_mode(False) is None
    with pytest.raises(ValueError, match="progress must be"):
        resolve_mode("loud")
