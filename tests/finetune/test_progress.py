"""Progress of long phases in a log, and the phases' seconds."""

from __future__ import annotations

import time

import pytest

from finetune.runtime import progress
from finetune.runtime.progress import PhaseTimes, process_started, tracked


class Clock:
    """A perf_counter that advances only when told: progress lines without waiting for them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_long_phase_in_a_log_says_its_rate_and_time_left_every_ten_seconds(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    for _ in tracked(range(40), 40, "decode", "decoding images once", None):
        clock.now += 1.0  # one image a second
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "zoo: decoding images once (40) …"
    assert lines[-1] == "zoo: decoding images once: done in 40.0 s"
    middle = lines[1:-1]
    # The first after 5 s, then at most one every 10 s: a 40 s phase gets 4, not one per image.
    assert [line.split(":")[2].split()[0] for line in middle] == ["5/40", "15/40", "25/40", "35/40"]
    assert all("1.0 images/s" in line and "left ~" in line for line in middle)
    assert "left ~0:00:25" in middle[1]


def test_phases_timed_inside_another_count_only_in_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    times = PhaseTimes()
    with times.phase("train"):
        clock.now += 2.0
        times.add("decode", 0.5)  # as the decoding inside the first epoch adds itself
    assert times.seconds == {"decode": 0.5, "train": 1.5}, "the phases add up to the 2 s that passed"


def test_the_process_start_lies_before_now() -> None:
    assert 0 < time.perf_counter() - process_started() < 24 * 3600
