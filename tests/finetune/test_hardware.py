"""Settings chosen from the machine: precision, image cache, loader workers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from finetune.runtime import hardware
from finetune.runtime.hardware import choose_cache, choose_loader, choose_precision

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
    assert too_big.value == "none"
    assert "budget" in too_big.reason
    assert choose_cache("disk", 100 * GIB, 1 * GIB).value == "disk"


def test_the_cache_never_exceeds_its_budget_and_streams_past_it() -> None:
    assert choose_cache("memory", 1 * GIB, 8 * GIB).value == "memory"
    over = choose_cache("memory", 3 * GIB, 8 * GIB)
    assert over.value == "none"
    assert "exceed its budget" in over.reason
    assert "loader workers" in over.reason
    assert choose_cache("disk", 10 * GIB, 1 * GIB, free_disk=100 * GIB).value == "disk"
    full = choose_cache("disk", 100 * GIB, 1 * GIB, free_disk=100 * GIB)
    assert full.value == "none"
    assert "100.0 GiB free" in full.reason
    assert "ZOO_CACHE" in full.reason


def test_loader_settings_follow_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "usable_cores", lambda: 16)
    gpu = choose_loader(None, 10_000, gpu=True)
    assert gpu.num_workers == 8
    assert gpu.pin_memory
    assert gpu.persistent_workers
    cpu = choose_loader(None, 10_000, gpu=False)
    assert cpu.num_workers == 7
    assert not cpu.pin_memory
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
    from finetune.runtime.hardware import has_depthwise_convolutions

    lite, resnet = zoo.create_model("efficientnet_lite0", 3), zoo.create_model("resnet18", 3)
    assert has_depthwise_convolutions(lite)
    assert not has_depthwise_convolutions(resnet)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"amx_bf16"})
    timed: list[int] = []
    monkeypatch.setattr(hardware, "network_bf16_speedup", lambda network, size: timed.append(size) or speedup)
    assert choose_precision("auto", "cpu", resnet, 64).value == "bf16-mixed", "no depthwise layer: no timing"
    assert not timed, "no depthwise layer: no timing"
    chosen = choose_precision("auto", "cpu", lite, 320, "efficientnet_lite0")
    assert chosen.value == expected
    assert "depthwise convolutions" in chosen.reason
    assert f"{speedup:.2f}×" in chosen.reason
    assert timed == [224], "timed at the run's size, at most 224 px"
    assert choose_precision("32", "cpu", lite, 64).reason == "as requested"


def test_the_bf16_timing_of_a_real_network_is_a_ratio() -> None:
    import zoo

    # Its size depends on the CPU: without native bf16 the emulated kernels ran 11× slower on one CI machine.
    speedup = hardware.network_bf16_speedup(zoo.create_model("efficientnet_lite0", 3), 32, batch=2, repeats=1)
    assert math.isfinite(speedup)
    assert speedup > 0


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
    assert timed == [64], "timed once, then read back"
    assert first.value == again.value == "32", "timed once, then read back"
    assert "timed on this CPU before" in again.reason
    assert str(tmp_path) in again.reason
    choose_precision("auto", "cpu", lite, 96, "efficientnet_lite0")
    assert timed == [64, 96], "another input size is another timing"


@pytest.mark.parametrize(
    ("cores", "busy", "workers", "processes", "expected"),
    [
        (2, 0.1, 0, 1, 2),  # quiet: every core
        (2, 2.0, 0, 1, 1),  # as many busy processes as cores: one thread, never none
        (2, 0.6, 0, 1, 1),  # a core more than half taken is not free
        (16, 0.0, 7, 1, 9),  # the loader workers keep their cores
        (16, 4.0, 0, 2, 6),  # DDP: each process gets its share of what is free
        (64, 0.0, 0, 1, 32),  # never above torch's default
    ],
)
def test_threads_come_from_the_free_cores(monkeypatch: pytest.MonkeyPatch, cores: int, busy: float, workers: int,
                                          processes: int, expected: int) -> None:
    monkeypatch.setattr(hardware, "usable_cores", lambda: cores)
    monkeypatch.setattr(hardware, "others_busy_cores", lambda: busy)
    monkeypatch.setattr(hardware, "TORCH_DEFAULT_THREADS", 32)
    choice = hardware.choose_threads(None, workers, processes)
    assert int(choice.value) == expected
    assert f"{cores} usable cores" in choice.reason
    assert f"{busy:.1f} kept busy by other processes" in choice.reason
    assert (f"{processes} training processes" in choice.reason) == (processes > 1)
    assert hardware.choose_threads(3, workers, processes) == hardware.Choice("3", "as requested")
    monkeypatch.setattr(hardware, "TORCH_DEFAULT_THREADS", 1)  # OMP_NUM_THREADS=1: nothing to measure
    monkeypatch.setattr(hardware, "others_busy_cores", lambda: pytest.fail("measured"))
    assert hardware.choose_threads(None, workers, processes).value == "1"


def test_the_busy_cores_of_others_are_a_share_of_this_process_cores() -> None:
    assert 0.0 <= hardware.others_busy_cores(0.05) <= hardware.usable_cores()


def test_a_run_prints_its_threads_records_them_and_gives_torch_back_its_own(
        image_folder, tmp_path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from finetune.config import load_config
    from finetune.training.run_folder import resume_config
    from zoo_cli.main import main

    monkeypatch.setattr(hardware, "others_busy_cores", lambda: 0.0)
    monkeypatch.setattr(hardware, "TORCH_DEFAULT_THREADS", 2)
    monkeypatch.setattr(hardware, "usable_cores", lambda: 2)
    before = torch.get_num_threads()
    out = tmp_path / "run"
    assert main(["finetune", "--arch", "small_cnn", "--data", str(image_folder), "--weights", "none", "--epochs", "1",
                 "--max-steps", "1", "--image-size", "28", "--out", str(out)]) == 0
    assert "zoo: trainer.threads: 2 (2 usable cores, 0.0 kept busy by other processes" in capsys.readouterr().out
    assert load_config(out / "config.yaml").trainer.threads == 2
    assert torch.get_num_threads() == before
    assert torch.tensor([1e-40]).mul(1.0).item() != 0.0  # denormals flushed in the run only
    monkeypatch.setattr(hardware, "others_busy_cores", lambda: 2.0)  # busy now: the run keeps its own numbers
    assert resume_config(out, {}).trainer.threads == 2
    assert resume_config(out, {"trainer": {"threads": 1}}).trainer.threads == 1


@pytest.mark.parametrize("flushed_before", [False, True])
def test_a_run_counts_denormals_as_zero_and_gives_the_flag_back(flushed_before: bool) -> None:
    import torch

    denormal = torch.tensor([1e-40])
    torch.set_flush_denormal(flushed_before)
    try:
        with hardware.run_arithmetic():
            assert denormal.mul(1.0).item() == 0.0
        assert (denormal.mul(1.0).item() == 0.0) == flushed_before
    finally:
        torch.set_flush_denormal(False)


def test_ddp_processes_share_the_cores() -> None:
    from finetune.config import RunConfig, merge
    from finetune.runtime.processes import processes_per_node

    assert processes_per_node(RunConfig()) == 1
    assert processes_per_node(merge(RunConfig(), {"trainer": {"devices": "2", "accelerator": "cpu"}})) == 2
    assert processes_per_node(merge(RunConfig(), {"trainer": {"devices": "0,1"}})) == 2
