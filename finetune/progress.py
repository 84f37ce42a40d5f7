"""Progress of the long phases before training (checking, decoding, feature extraction), and their time.

In a terminal a bar on stderr; elsewhere (log files) one line when a phase starts and one when it ends.
Every phase's seconds add up in ``PhaseTimes``, which the run writes into ``summary.json``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")


class PhaseTimes:
    """Seconds spent per phase, summed over the phase's calls (e.g. one decoding per split)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        return {phase: round(seconds, 3) for phase, seconds in self.seconds.items()}


def tracked(items: Iterable[Item], total: int, phase: str, description: str,
            times: PhaseTimes | None) -> Iterator[Item]:
    """Yield ``items`` while showing the progress of ``description``; add the elapsed time to ``times[phase]``."""
    started = time.perf_counter()
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"zoo: {description}", leave=False, file=sys.stderr)
    else:
        print(f"zoo: {description} ({total}) …", flush=True)
    try:
        for item in items:
            yield item
            if bar is not None:
                bar.update()
    finally:
        seconds = time.perf_counter() - started
        if bar is not None:
            bar.close()
        print(f"zoo: {description}: done in {seconds:.1f} s", flush=True)
        if times is not None:
            times.add(phase, seconds)
