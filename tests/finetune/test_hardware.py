"""Settings chosen from the machine: precision, image cache, loader workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune import hardware
from finetune.hardware import choose_cache, choose_loader, choose_precision

GIB = 2**30


@pytest.mark.parametrize(
    ("flags", "speedup", "expected"),
    [
        ({"avx2", "amx_bf16", "avx512_bf16"}, None, "bf16-mixed"),
        ({"avx2", "avx512_bf16"}, 1.6, "bf16-mixed"),
        ({"avx2", "avx512_bf16"}, 1.05, "32"),
        ({"avx2"}, None, "32"),
    ],
)
def test_cpu_precision_follows_the_flags_and_the_probe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: set[str], speedup: float | None, expected: str
) -> None:
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))  # a machine that has timed nothing yet
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    monkeypatch.setattr(hardware, "bf16_conv_speedup",
                        lambda: speedup if speedup is not None else pytest.fail("no probe"))
    choice = choose_precision("auto", "cpu")
    assert choice.value == expected
    if speedup is not None:
        assert f"{speedup:.1f}×" in choice.reason, "the reason names the measured speed-up"
    assert choose_precision("32", "cpu").value == "32"


def test_auto_cache_takes_memory_within_its_budget_and_never_disk() -> None:
    assert choose_cache("auto", 1 * GIB, 8 * GIB).value == "memory"
    too_big = choose_cache("auto", 3 * GIB, 8 * GIB)
    assert too_big.value == "none" and "budget" in too_big.reason
    assert choose_cache("disk", 100 * GIB, 1 * GIB).value == "disk"


def test_loader_settings_follow_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "usable_cores", lambda: 16)
    gpu = choose_loader(None, 10_000, gpu=True)
    assert gpu.num_workers == 8 and gpu.pin_memory and gpu.persistent_workers
    cpu = choose_loader(None, 10_000, gpu=False)
    assert cpu.num_workers == 7 and not cpu.pin_memory
    assert choose_loader(None, 100, gpu=True).num_workers == 0, "a tiny data set is read in the main process"
    assert choose_loader(3, 100, gpu=False).num_workers == 3
    monkeypatch.setattr(hardware, "usable_cores", lambda: 2)
    assert choose_loader(None, 10_000, gpu=False).num_workers == 0, "2 cores: both train"


@pytest.mark.parametrize(("speedup", "expected"), [(0.76, "32"), (1.6, "bf16-mixed")])
def test_depthwise_networks_are_timed_in_both_precisions_on_a_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, speedup: float, expected: str
) -> None:
    import zoo

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    from finetune.hardware import has_depthwise_convolutions

    lite, resnet = zoo.create_model("efficientnet_lite0", 3), zoo.create_model("resnet18", 3)
    assert has_depthwise_convolutions(lite) and not has_depthwise_convolutions(resnet)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"amx_bf16"})
    timed: list[int] = []
    monkeypatch.setattr(hardware, "network_bf16_speedup", lambda network, size: timed.append(size) or speedup)
    assert choose_precision("auto", "cpu", resnet, 64).value == "bf16-mixed" and not timed, \
        "no depthwise layer: no timing"
    chosen = choose_precision("auto", "cpu", lite, 320, "efficientnet_lite0")
    assert chosen.value == expected and "depthwise convolutions" in chosen.reason and f"{speedup:.2f}×" in chosen.reason
    assert timed == [224], "timed at the run's size, at most 224 px"
    assert choose_precision("32", "cpu", lite, 64).reason == "as requested"


def test_the_bf16_timing_of_a_real_network_is_a_ratio() -> None:
    import zoo

    assert 0.1 < hardware.network_bf16_speedup(zoo.create_model("efficientnet_lite0", 3), 32, batch=2, repeats=1) < 10


def test_a_precision_probe_runs_once_per_machine_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import zoo

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"amx_bf16"})
    timed: list[int] = []
    monkeypatch.setattr(hardware, "network_bf16_speedup", lambda network, size: timed.append(size) or 0.8)
    lite = zoo.create_model("efficientnet_lite0", 3)
    first = choose_precision("auto", "cpu", lite, 64, "efficientnet_lite0")
    assert "timing efficientnet_lite0 at 64 px in bf16" in capsys.readouterr().out, "the probe is never silent"
    again = choose_precision("auto", "cpu", lite, 64, "efficientnet_lite0")
    assert timed == [64] and first.value == again.value == "32", "timed once, then read back"
    assert "timed on this CPU before" in again.reason and str(tmp_path) in again.reason
    choose_precision("auto", "cpu", lite, 96, "efficientnet_lite0")
    assert timed == [64, 96], "another input size is another timing"
