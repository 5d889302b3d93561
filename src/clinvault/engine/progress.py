"""Progress of long work: stages, bytes done and total, percent and ETA.

Stages may run at the same time (the database and files parts of a full backup are produced
in parallel), so progress is kept per stage and summed. Reports go to one callback, at most a
few times a second, and always on a stage change and at the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ProgressReport:
    stage: str
    percent: float
    bytes_done: int
    bytes_total: int
    eta_seconds: float | None
    elapsed_seconds: float
    message: str | None = None


ProgressCallback = Callable[[ProgressReport], None]


@dataclass
class _Stage:
    total: int
    done: int = 0
    active: bool = False
    finished: bool = False


@dataclass
class ProgressTracker:
    callback: ProgressCallback | None = None
    min_interval: float = 0.25
    clock: Callable[[], float] = time.monotonic
    _stages: dict[str, _Stage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _started: float = 0.0
    _last_emit: float = float("-inf")
    _message: str | None = None

    def __post_init__(self) -> None:
        self._started = self.clock()

    def plan(self, stage: str, total_bytes: int) -> None:
        """Declare a stage and the bytes it is expected to process."""
        with self._lock:
            self._stages[stage] = _Stage(total=max(0, total_bytes))

    def start(self, stage: str, message: str | None = None) -> None:
        with self._lock:
            self._stages.setdefault(stage, _Stage(total=0)).active = True
            self._message = message
        self._emit(force=True)

    def advance(self, stage: str, nbytes: int) -> None:
        with self._lock:
            entry = self._stages.setdefault(stage, _Stage(total=0, active=True))
            entry.done += nbytes
            if entry.done > entry.total:
                entry.total = entry.done
        self._emit()

    def finish(self, stage: str) -> None:
        with self._lock:
            entry = self._stages.setdefault(stage, _Stage(total=0))
            entry.total = max(entry.total, entry.done)
            entry.done = entry.total
            entry.active = False
            entry.finished = True
        self._emit(force=True)

    def report(self) -> ProgressReport:
        with self._lock:
            total = sum(s.total for s in self._stages.values())
            done = sum(min(s.done, s.total) for s in self._stages.values())
            active = [name for name, s in self._stages.items() if s.active]
            all_finished = bool(self._stages) and all(s.finished for s in self._stages.values())
            message = self._message
        elapsed = self.clock() - self._started
        percent = min(99.9, 100.0 * done / total) if total else 0.0
        if all_finished:
            percent = 100.0
        eta = elapsed * (total - done) / done if done and total > done else None
        stage = "+".join(active) if active else ("done" if all_finished else "starting")
        return ProgressReport(stage, round(percent, 1), done, total, eta, elapsed, message)

    def _emit(self, *, force: bool = False) -> None:
        if self.callback is None:
            return
        now = self.clock()
        with self._lock:
            if not force and now - self._last_emit < self.min_interval:
                return
            self._last_emit = now
        self.callback(self.report())
