"""Progress of long work made of stages (training): one bar in a terminal, a line per stage elsewhere.

Stages have expected weights (their share of the work, estimated by whoever runs them); the
bar's percentage is the weighted sum of finished stages plus the current one's fraction. The
weights are estimates, so no overall ETA is shown: the only time left printed is the current
stage's, from its own measured rate, once it has reported enough progress to measure one
(never for a stage that reports only start and end). Each finished stage prints how long it
took.

Where it shows:

* ``"bar"``: a tqdm bar on stderr (the default when stderr is a terminal);
* ``"lines"``: a line per finished stage on stdout, and a line every ``heartbeat`` seconds
  inside a long stage (the default elsewhere: Jupyter, where stderr shows as a red box, and
  logs, where a bar's carriage returns pile up);
* ``False``: nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal

from tqdm import tqdm

__all__ = ["Mode", "StageProgress", "resolve_mode"]

Mode = Literal["bar", "lines"]

#: a stage's fraction must reach this, after this many seconds, before its time left is shown
_MIN_FRACTION, _MIN_SECONDS = 0.05, 2.0


def resolve_mode(progress: bool | str) -> Mode | None:
    """``True`` -> "bar" on a terminal, "lines" elsewhere; ``False`` -> None; "bar"/"lines" as given."""
    if progress is True:
        return "bar" if sys.stderr.isatty() else "lines"
    if progress is False or progress is None:
        return None
    if progress in ("bar", "lines"):
        return progress  # type: ignore[return-value]
    raise ValueError(f"progress must be True, False, 'bar' or 'lines', got {progress!r}")


class _Bar(tqdm):  # type: ignore[misc]  # tqdm ships without type hints
    """A tqdm bar with a ``{status}`` field (tqdm's ``{postfix}`` starts with a comma)."""

    status = ""

    @property
    def format_dict(self) -> dict[str, Any]:
        return {**super().format_dict, "status": self.status}


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class StageProgress:
    """Stage-weighted progress; feed it ``{"stage": name, "progress": fraction}`` events.

    Parameters
    ----------
    desc : str
        What is being done ("train patchcore").
    weights : mapping of stage name to float
        Expected share of each stage, in the order they run; stages not listed weigh 0 and
        still print their time.
    progress : bool or {"bar", "lines"}
        See :func:`resolve_mode`.
    heartbeat : float
        Seconds between lines inside a long stage ("lines" mode).
    write : callable, optional
        Where lines go (default ``print`` to stdout, flushed).
    clock : callable, optional
        Monotonic seconds (for tests).

    Examples
    --------
    >>> lines = []
    >>> with StageProgress("train", {"load": 1, "fit": 3}, progress="lines", write=lines.append) as p:
    ...     p.update({"stage": "load", "progress": 1.0})
    ...     p.update({"stage": "fit", "progress": 0.5})
    ...     print(p.percent)
    62.5
    >>> [line.split(" in ")[0] for line in lines]
    ['train: load done', 'train: fit done', 'train: finished']
    """

    def __init__(self, desc: str, weights: Mapping[str, float], *, progress: bool | str = True,
                 heartbeat: float = 30.0, write: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.desc = desc
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        self._total = sum(self.weights.values()) or 1.0
        self.mode = resolve_mode(progress)
        self.heartbeat = heartbeat
        self._write = write or (lambda line: print(line, flush=True))
        self._clock = clock
        self._done: dict[str, float] = {}  # finished stage -> seconds it took
        self._stage: str | None = None
        self._fraction = 0.0
        self._stage_start = self._last_line = self._start = clock()
        self._bar: Any = None
        self._closed = False
        if self.mode == "bar":
            self._bar = _Bar(total=100, desc=desc, bar_format="{desc}: {percentage:3.0f}%|{bar}| {status}", leave=True)

    @property
    def percent(self) -> float:
        """Weighted percentage of the work done."""
        finished = sum(self.weights.get(s, 0.0) for s in self._done)
        current = self.weights.get(self._stage, 0.0) * self._fraction if self._stage else 0.0
        return round(100 * min(1.0, (finished + current) / self._total), 1)

    def stage_left(self) -> float | None:
        """Seconds left in the current stage from its own rate, or None when it cannot be measured."""
        spent = self._clock() - self._stage_start
        if self._stage is None or self._fraction < _MIN_FRACTION or spent < _MIN_SECONDS or self._fraction >= 1:
            return None
        return spent * (1 - self._fraction) / self._fraction

    def update(self, event: Mapping[str, Any]) -> None:
        """Take one event: a stage name and its fraction in [0, 1]; ``"done"`` ends the work."""
        stage = str(event.get("stage") or self._stage or "")
        fraction = min(1.0, max(0.0, float(event.get("progress", 0.0) or 0.0)))
        now = self._clock()
        if stage != self._stage:
            self._finish(now)
            if stage == "done":
                self._show(now)
                return
            self._stage, self._fraction, self._stage_start = stage, 0.0, now
        self._fraction = fraction
        self._show(now)

    def _finish(self, now: float) -> None:
        if self._stage is None or self._stage in self._done:
            return
        took = now - self._stage_start
        self._done[self._stage] = took
        self._fraction = 0.0
        if self.mode == "lines":
            self._write(f"{self.desc}: {self._stage} done in {took:.1f} s ({self.percent:.0f}%)")
            self._last_line = now
        self._stage = None

    def _show(self, now: float) -> None:
        left = self.stage_left()
        if self.mode == "bar":
            where = f"{self._stage} {100 * self._fraction:.0f}%" if self._stage else "done"
            extra = f", about {_clock(left)} left in {self._stage}" if left is not None else ""
            self._bar.n = self.percent
            self._bar.status = f"{where} · {_clock(now - self._start)} elapsed{extra}"
            self._bar.refresh()
        elif self.mode == "lines" and self._stage and now - self._last_line >= self.heartbeat:
            extra = f", about {_clock(left)} left in this stage" if left is not None else ""
            self._write(f"{self.desc}: {self._stage} {100 * self._fraction:.0f}% "
                        f"({now - self._stage_start:.0f} s{extra})")
            self._last_line = now

    @property
    def timings(self) -> dict[str, float]:
        """Seconds each finished stage took."""
        return dict(self._done)

    def close(self) -> None:
        """Finish the current stage and print the total time (once)."""
        if self._closed:
            return
        self._closed = True
        now = self._clock()
        self._finish(now)
        if self.mode == "bar" and self._bar is not None:
            self._show(now)
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self._done:
            self._write(f"{self.desc}: finished in {now - self._start:.1f} s")

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:  # do not report a failed run as finished
            self._stage = None
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            return
        self.close()
