"""Where a run's wall time goes: its phases' seconds, and the progress of the long ones.

Every phase's seconds add up in ``PhaseTimes``, which the run writes into ``summary.json``; a phase timed
inside another (decoding inside training) counts in its own phase only, so the phases add up to the wall time.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

Item = TypeVar("Item")
_IMPORTED = time.perf_counter()


def process_started() -> float:
    """The ``time.perf_counter()`` reading when this process started: the user's wait includes the interpreter's
    start and every import. Read from ``/proc``; where there is none, when this module was imported."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return _IMPORTED
    # Both clocks count from boot; a suspend between them would make the age absurd, and then import time is closer.
    now = time.perf_counter()
    return now - age if 0 <= age < now - _IMPORTED + 3600 else _IMPORTED


class PhaseTimes:
    """Seconds spent per phase, summed over the phase's calls (e.g. one decoding per split)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as ``name``, less the seconds of phases timed inside it (decoding inside training)."""
        inner = sum(self.seconds.values())
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started - (sum(self.seconds.values()) - inner))

    def rounded(self) -> dict[str, float]:
        return {phase: round(seconds, 3) for phase, seconds in self.seconds.items()}


FIRST_LINE_SECONDS = 5.0  # a phase shorter than this says only that it started and ended
LINE_SECONDS = 10.0  # then one line at most this often: a log grows slowly, and still shows the run alive


def clock(seconds: float) -> str:
    """``h:mm:ss``."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class ProgressLines:
    """Progress of a long phase for output that is not a terminal (log files, pipes, CI): a line after
    ``FIRST_LINE_SECONDS``, then at most one every ``LINE_SECONDS``, with the rate and the time left.

    ``zoo: decoding images once: 1200/20000 (6%)  240 images/s  elapsed 0:00:05  left ~0:01:18``
    """

    def __init__(self, description: str, total: int, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.started = time.perf_counter()
        self._next = self.started + FIRST_LINE_SECONDS

    def deferred(self) -> None:
        """Another line just showed the phase alive (an epoch's): the next progress line waits its interval."""
        self._next = max(self._next, time.perf_counter() + LINE_SECONDS)

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now < self._next or done <= 0:
            return
        self._next = now + LINE_SECONDS
        elapsed = now - self.started
        rate = done / elapsed
        share = f" ({done / self.total:.0%})" if self.total else ""
        left = f"  left ~{clock((self.total - done) / rate)}" if self.total >= done else ""
        print(f"zoo: {self.description}: {done}/{self.total or '?'}{share}  {rate:,.1f} {self.unit}/s  "
              f"elapsed {clock(elapsed)}{left}", flush=True)


def tracked(items: Iterable[Item], total: int, phase: str | None, description: str,
            times: PhaseTimes | None, unit: str = "images") -> Iterator[Item]:
    """Yield ``items`` while showing the progress of ``description`` (``total`` ``unit``); add the elapsed time to
    ``times[phase]``.

    In a terminal a bar on stderr; elsewhere a line when it starts, progress lines (``ProgressLines``) and one
    when it ends.
    """
    started = time.perf_counter()
    bar, lines = None, None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"zoo: {description}", unit=unit, leave=False, file=sys.stderr)
    else:
        print(f"zoo: {description} ({total}) …", flush=True)
        lines = ProgressLines(description, total, unit)
    done = 0
    try:
        for item in items:
            yield item
            done += 1
            if bar is not None:
                bar.update()
            elif lines is not None:
                lines.update(done)
    finally:
        seconds = time.perf_counter() - started
        if bar is not None:
            bar.close()
        print(f"zoo: {description}: done in {seconds:.1f} s", flush=True)
        if times is not None and phase is not None:
            times.add(phase, seconds)
