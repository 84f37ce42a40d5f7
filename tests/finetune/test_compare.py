"""`zoo compare` and `zoo report` end to end: small_cnn and resnet18 fine-tuned alike, alexnet failing."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from finetune.compare import load_comparison
from finetune.compare.findings import findings
from finetune.compare.plots import pareto_front
from finetune.compare.report import title_for
from finetune.compare.results import RESULT_COLUMNS
from finetune.config import ConfigError, RunConfig, load_config, to_dict
from finetune.results.stats import mcnemar, wilson_interval
from tests.helpers import make_image_folder, per_test_environment, run_command
from zoo_cli.main import main

ARCHS = ["small_cnn", "alexnet", "resnet18"]  # alexnet needs 63 px: at 32 px it fails between the other two
# --weights none and an image folder: nothing reads or writes a weights or dataset cache.
QUICK = ["--image-size", "32", "--epochs", "1", "--max-steps", "2", "--weights", "none", "--batch-size", "8",
         "--augment", "none"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPEC_COLUMNS = (
    "name", "setting", "weights", "depth", "params", "gflops", "ilsvrc_year", "ilsvrc_top5_error",
    "imagenet_top1_error", "imagenet_top5_error", "test_top1_error", "test_top1_error_ci95", "learned", "p_vs_best",
    "topk_error", "k",
    "train_seconds", "train_images_per_second", "predict_ms_per_image", "status", "reason",
)


@dataclass(frozen=True)
class Outcome:
    code: int
    printed: str  # stdout and stderr together


@dataclass(frozen=True)
class Comparison:
    out: Path
    images: Path
    first: Outcome


def zoo(argv: Sequence[str]) -> Outcome:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = main(list(argv))
    return Outcome(code, buffer.getvalue())


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    """One real comparison, shared by the tests (each run trains for 2 steps on 32 px images)."""
    root = tmp_path_factory.mktemp("compare")
    images = make_image_folder(root / "images")
    out = root / "comparison"
    with per_test_environment(tmp_path_factory):  # the tests' short speed measurements, for its three runs
        first = zoo(["compare", "--archs", ",".join(ARCHS), "--data", str(images), "--out", str(out), *QUICK])
    return Comparison(out, images, first)


def results(out: Path) -> dict[str, dict]:
    rows = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return {row["name"]: row for row in rows}


def _correct(run_dir: Path) -> dict[str, bool]:
    with (run_dir / "test_predictions.csv").open(encoding="utf-8") as file:
        return {row["path"]: row["label"] == row["predicted"] for row in csv.DictReader(file)}


def test_every_architecture_has_a_row_in_order(comparison: Comparison) -> None:
    assert list(results(comparison.out)) == ARCHS


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_a_finished_run_is_a_row_of_its_own_settings(comparison: Comparison, name: str) -> None:
    row = results(comparison.out)[name]
    assert row["status"] == "ok"
    assert row["reason"] is None
    assert row["weights"] == "none"
    assert row["setting"] == ""
    assert row["num_test"] == 3
    assert row["reported_on"] == "test"
    assert row["seeds"] == "0"


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_a_rows_test_error_is_its_runs_predictions_with_a_wilson_interval(comparison: Comparison, name: str) -> None:
    row = results(comparison.out)[name]
    errors = sum(not correct for correct in _correct(comparison.out / "runs" / name).values())
    assert row["test_top1_error"] == pytest.approx(100 * errors / 3, abs=1e-3)
    assert row["test_top1_error_ci95"] == pytest.approx(list(wilson_interval(errors, 3)), abs=1e-3)
    assert row["chance_top1_error"] == pytest.approx(200 / 3, abs=1e-3)  # 3 balanced classes
    assert row["learned"] == (row["test_top1_error_ci95"][1] < row["chance_top1_error"])
    assert row["k"] == 2
    assert 0 <= row["topk_error"] <= row["test_top1_error"]


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_a_row_gives_training_and_prediction_speed(comparison: Comparison, name: str) -> None:
    row = results(comparison.out)[name]
    assert row["train_seconds"] > 0
    assert row["train_images_per_second"] > 0
    low, high = row["predict_ms_per_image_iqr"]
    assert 0 < low <= row["predict_ms_per_image"] <= high
    assert row["predict_images_per_second"] > 0
    assert row["predict_batch_size"] == 8


def test_a_row_describes_the_trained_network(comparison: Comparison) -> None:
    rows = results(comparison.out)
    assert (rows["small_cnn"]["depth"], rows["resnet18"]["depth"]) == (5, 18)
    # the trained network (a 3-class head) at the runs' size, not the published 1000-class one
    assert rows["resnet18"]["params"] == 11_689_512 - 512 * 997 - 997
    assert rows["resnet18"]["ilsvrc_year"] == 2015
    assert rows["resnet18"]["imagenet_top1_error"] is None  # trained from random weights: no ImageNet figure


def test_results_csv_holds_the_same_rows_as_results_json(comparison: Comparison) -> None:
    rows = results(comparison.out)
    with (comparison.out / "results.csv").open(encoding="utf-8") as file:
        table = list(csv.DictReader(file))
    assert tuple(table[0]) == RESULT_COLUMNS
    assert set(SPEC_COLUMNS) <= set(RESULT_COLUMNS)
    assert [row["name"] for row in table] == ARCHS
    assert float(table[0]["test_top1_error"]) == rows["small_cnn"]["test_top1_error"]


def test_p_vs_best_is_the_exact_mcnemar_test_on_the_shared_test_images(comparison: Comparison) -> None:
    rows = results(comparison.out)
    finished = [rows["small_cnn"], rows["resnet18"]]
    learned = [row for row in finished if row["learned"]] or finished
    best = min(learned, key=lambda row: row["test_top1_error"])
    other = next(row for row in finished if row is not best)
    first, second = (_correct(Path(row["run_dir"])) for row in (best, other))
    assert first.keys() == second.keys()
    expected = mcnemar([first[path] for path in first], [second[path] for path in first]).p_value
    assert best["p_vs_best"] is None
    assert other["p_vs_best"] == pytest.approx(expected)


def test_a_failing_architecture_is_recorded_and_the_others_finish(comparison: Comparison) -> None:
    assert comparison.first.code == 1
    failed = results(comparison.out)["alexnet"]
    assert failed["status"] == "failed"
    assert "at least 63 px" in failed["reason"]
    assert "\n" not in failed["reason"]
    assert failed["test_top1_error"] is None
    assert failed["p_vs_best"] is None
    assert failed["depth"] == 8
    assert "alexnet failed: alexnet needs images of at least 63 px" in comparison.first.printed
    assert (comparison.out / "runs" / "resnet18" / "summary.json").is_file()  # trained after the failure


def test_runs_are_ordinary_run_folders_on_one_shared_split(comparison: Comparison) -> None:
    runs = comparison.out / "runs"
    for name in ("small_cnn", "resnet18"):
        for part in ("classes.json", "train.csv", "val.csv", "test.csv"):
            assert (runs / name / part).read_bytes() == (comparison.out / "split" / part).read_bytes()
        assert {"best.ckpt", "last.ckpt", "config.yaml", "summary.json", "test_predictions.csv"} <= {
            p.name for p in (runs / name).iterdir()}
        assert load_config(runs / name / "config.yaml").model.arch == name
    small, resnet = (load_config(runs / name / "config.yaml") for name in ("small_cnn", "resnet18"))
    assert (small.data, small.optim, small.trainer) == (resnet.data, resnet.optim, resnet.trainer)


@pytest.mark.parametrize("plot", ["depth_vs_error.png", "error_vs_cost.png", "curves.png"])
def test_each_plot_is_a_drawn_png(comparison: Comparison, plot: str) -> None:
    data = (comparison.out / plot).read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000


def test_the_report_says_how_the_runs_were_trained_and_tested(comparison: Comparison) -> None:
    report = (comparison.out / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# images: 1 epoch, at most 2 steps, 32 px, weights none, seed 0")
    assert "tested once on 3 images of 3 classes held out from the start" in report


def test_the_report_names_the_failure_and_every_run_that_did_not_learn(comparison: Comparison) -> None:
    report = (comparison.out / "report.md").read_text(encoding="utf-8")
    assert "alexnet failed: " in report
    rows = results(comparison.out)
    for name in ("small_cnn", "resnet18"):
        said = f"{name} did not learn" in report
        assert said == (not rows[name]["learned"]), "every row that did not learn is named, and only those"


def test_the_report_has_a_row_per_finished_network_and_shows_the_plots(comparison: Comparison) -> None:
    report = (comparison.out / "report.md").read_text(encoding="utf-8")
    assert "| small_cnn |  | none | 5 |" in report
    assert "| resnet18 |  | none | 18 |" in report
    assert "![depth vs error](depth_vs_error.png)" in report
    assert "![error vs cost](error_vs_cost.png)" in report
    assert "![validation curves](curves.png)" in report


def test_compare_prints_the_table_and_where_the_comparison_is(comparison: Comparison) -> None:
    assert "top-1 err % (95% CI)" in comparison.first.printed
    assert f"comparison folder: {comparison.out}" in comparison.first.printed


def test_results_per_seed_csv_has_a_row_per_architecture(comparison: Comparison) -> None:
    with (comparison.out / "results_per_seed.csv").open(encoding="utf-8") as file:
        assert [row["name"] for row in csv.DictReader(file)] == ARCHS


def test_running_again_skips_finished_architectures(comparison: Comparison) -> None:
    runs = comparison.out / "runs"
    before = {name: (runs / name / "summary.json").stat().st_mtime_ns for name in ("small_cnn", "resnet18")}
    again = zoo(["compare", "--out", str(comparison.out)])  # the folder's saved settings and architectures
    assert again.code == 1  # alexnet is retried and fails again
    for name in ("small_cnn", "resnet18"):
        assert f"{name}: skipped, already finished in {runs / name}" in again.printed
        assert (runs / name / "summary.json").stat().st_mtime_ns == before[name]
    assert list(results(comparison.out)) == ARCHS


def test_continuing_with_other_settings_is_refused(comparison: Comparison) -> None:
    refused = zoo(["compare", "--out", str(comparison.out), "--max-steps", "3"])
    assert refused.code == 2
    assert "trainer.max_steps" in refused.printed


def test_misspelt_architecture_fails_before_any_training(tmp_path: Path) -> None:
    refused = zoo(["compare", "--archs", "small_cnn,resnet19", "--data", str(tmp_path), "--out", str(tmp_path / "c")])
    assert refused.code == 2
    assert "resnet19" in refused.printed
    assert not (tmp_path / "c").exists()


def test_report_from_existing_runs(comparison: Comparison, tmp_path: Path) -> None:
    runs = [comparison.out / "runs" / name for name in ("small_cnn", "resnet18")]
    outcome = zoo(["report", *map(str, runs), "--out", str(tmp_path / "report")])
    assert outcome.code == 0
    rows = results(tmp_path / "report")
    assert list(rows) == ["small_cnn", "resnet18"]
    compared = results(comparison.out)
    for name in ("small_cnn", "resnet18"):
        assert rows[name]["predict_ms_per_image"] == compared[name]["predict_ms_per_image"]
        assert rows[name]["p_vs_best"] == compared[name]["p_vs_best"]
    assert all((tmp_path / "report" / plot).stat().st_size > 10_000
               for plot in ("depth_vs_error.png", "error_vs_cost.png"))
    assert "held out from the start" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")


def test_report_refuses_an_unfinished_run(tmp_path: Path) -> None:
    outcome = zoo(["report", str(tmp_path), "--out", str(tmp_path / "report")])
    assert outcome.code == 2
    assert "no summary.json" in outcome.printed


def _row(comparison: Comparison, name: str, depth: int, error: float, interval: list[float], *, learned: bool = True,
         p_value: float | None = None, latency: list[float] | None = None) -> dict:
    """A results row with chosen figures, on the comparison's real run folder (for the data sentence)."""
    real = results(comparison.out)["small_cnn"]
    low, high = latency or [1.0, 1.0]
    return {**real, "name": name, "depth": depth, "test_top1_error": error, "test_top1_error_ci95": interval,
            "num_test": 270, "learned": learned, "chance_top1_error": 90.0, "p_vs_best": p_value,
            "predict_ms_per_image": (low + high) / 2, "predict_ms_per_image_iqr": [low, high],
            "test_top1_error_std": None}


def test_findings_say_only_what_the_tests_support(comparison: Comparison) -> None:
    config = json.loads((comparison.out / "runs" / "small_cnn" / "summary.json").read_text())["config"]
    small = _row(comparison, "small_cnn", 5, 12.0, [8.7, 16.4], p_value=0.002, latency=[0.9, 1.1])
    resnet = _row(comparison, "resnet18", 18, 4.0, [2.3, 7.1], latency=[3.8, 4.2])
    vgg = _row(comparison, "vgg11", 11, 89.7, [85.5, 92.8], learned=False, p_value=0.9)
    rows = [small, resnet, vgg]
    said = " ".join(findings(rows, rows, [config]))
    assert "Lowest test error: resnet18, 4.0% (95% CI 2.3-7.1)." in said
    assert ("resnet18 is better than small_cnn (12.0% (95% CI 8.7-16.4)) on these 270 test images "
            "(McNemar p = 0.002)") in said
    assert "vgg11 did not learn: its test error 89.7% (95% CI 85.5-92.8) does not lie below chance, 90.0%" in said
    # Two models that learned: no depth verdict, whatever their order, and vgg11 is not counted.
    assert "Too few models that learned with different depths (2) to judge a depth trend." in said
    assert "Left out as they did not learn: vgg11." in said
    assert "Deeper was" not in said
    assert "No model indistinguishable from resnet18 is measurably faster" in said

    small["p_vs_best"] = 0.41
    said = " ".join(findings(rows, rows, [config]))
    assert "resnet18 and small_cnn (12.0% (95% CI 8.7-16.4)) are not distinguishable here (p = 0.41)" in said
    assert "small_cnn is not distinguishable from resnet18 (p = 0.41) and is faster to run: 1.00 ms per image " \
           "(IQR 0.90-1.10) against 4.00 ms (3.80-4.20), 4.0× faster." in said
    small["predict_ms_per_image_iqr"] = [0.9, 3.9]  # its spread reaches into the best's: no ranking on noise
    assert "is faster to run" not in " ".join(findings(rows, rows, [config]))

    deep = [_row(comparison, f"net{depth}", depth, 40.0 - depth, [30.0 - depth, 50.0 - depth], p_value=0.01)
            for depth in (5, 8, 11, 16, 19, 22)]
    said = " ".join(findings(deep, deep, [config]))
    assert ("Deeper was better here: error falls with depth "
            "(Spearman ρ = -1.00, p = 0.0028, over 6 models that learned)") in said
    longer = {**config, "trainer": {**config["trainer"], "epochs": 3}}
    assert any("These runs differ in trainer.epochs" in sentence for sentence in findings(rows, rows, [config, longer]))


def test_report_titles_name_the_image_size_the_runs_used() -> None:
    values = to_dict(RunConfig())  # image_size None: each network's own
    assert "224 px" in title_for([values], [224])
    assert "None" not in title_for([values], [224])
    assert "each network's default input size" in title_for([values])


def test_pareto_front_keeps_what_nothing_cheaper_beats() -> None:
    # (cost, error): index 2 is beaten by the cheaper, better index 0; index 3 ties index 1's error at more cost
    points = [(1.0, 20.0), (4.0, 10.0), (2.0, 25.0), (8.0, 10.0), (16.0, 5.0)]
    assert pareto_front(points) == [0, 1, 4]


def test_comparison_config_files(tmp_path: Path) -> None:
    files = [path for path in sorted(Path("configs").glob("*.yaml")) if "archs" in path.read_text(encoding="utf-8")]
    assert Path("configs/compare-classic.yaml") in files
    assert all(load_comparison(path)[0].archs for path in files)
    plan, config = load_comparison("configs/compare-classic.yaml")
    assert plan.archs == ["alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "resnet152"]
    assert config.data.image_size == 224
    assert config.model.weights == "default"
    bad = tmp_path / "bad.yaml"
    bad.write_text("archs: [resnet18]\ntrainer:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="trainer.epoch"):
        load_comparison(bad)
    bad.write_text("archs: [resnet18]\nmodel:\n  arch: resnet50\n")
    with pytest.raises(ConfigError, match="list the architectures under archs"):
        load_comparison(bad)


SETTINGS = ["model.dropout=0", "model.dropout=0.5"]


@pytest.fixture(scope="module")
def on_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``zoo compare`` of small_cnn on digits with two seeds and two dropouts (6 steps a run), once for the tests."""
    out = tmp_path_factory.mktemp("compare-digits") / "dropout"
    with per_test_environment(tmp_path_factory):
        run_command(["compare", "--archs", "small_cnn", "--data", "digits", "--weights", "none", "--epochs", "2",
                     "--max-steps", "6", "--batch-size", "64", "--augment", "none", "--seeds", "0,1",
                     "--vary", "model.dropout=0,0.5", "--out", str(out)], out)
    return out


def _rows(out: Path) -> dict[str, dict]:
    """results.json's rows by setting."""
    return {row["setting"]: row for row in json.loads((out / "results.json").read_text(encoding="utf-8"))}


def _per_seed(out: Path) -> list[dict[str, str]]:
    with (out / "results_per_seed.csv").open(encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_a_setting_is_one_row_over_all_its_seeds(on_digits: Path) -> None:
    rows = json.loads((on_digits / "results.json").read_text(encoding="utf-8"))
    assert [(row["name"], row["setting"], row["seeds"]) for row in rows] == [
        ("small_cnn", "model.dropout=0", "0,1"), ("small_cnn", "model.dropout=0.5", "0,1")]


def test_results_per_seed_csv_has_a_row_per_setting_and_seed(on_digits: Path) -> None:
    assert [(row["setting"], row["seeds"]) for row in _per_seed(on_digits)] == [
        ("model.dropout=0", "0"), ("model.dropout=0", "1"), ("model.dropout=0.5", "0"), ("model.dropout=0.5", "1")]


@pytest.mark.parametrize("setting", SETTINGS)
def test_a_settings_error_is_the_mean_and_deviation_over_its_seeds(on_digits: Path, setting: str) -> None:
    row = _rows(on_digits)[setting]
    errors = [float(seed["test_top1_error"]) for seed in _per_seed(on_digits) if seed["setting"] == setting]
    assert row["test_top1_error"] == pytest.approx(sum(errors) / 2, abs=1e-3)
    assert row["test_top1_error_std"] == pytest.approx(abs(errors[0] - errors[1]) / 2 ** 0.5, abs=1e-3)


@pytest.mark.parametrize("setting", SETTINGS)
def test_a_settings_row_is_tested_on_the_whole_digits_test_split(on_digits: Path, setting: str) -> None:
    row = _rows(on_digits)[setting]
    assert row["num_test"] == 269
    assert row["learned"] in (True, False)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("setting", SETTINGS)
def test_each_run_has_its_own_seed_and_setting(on_digits: Path, setting: str, seed: int) -> None:
    config = load_config(on_digits / "runs" / "small_cnn" / setting / f"seed-{seed}" / "config.yaml")
    assert config.trainer.seed == seed
    assert config.model.dropout == float(setting.split("=")[1])


def test_the_report_says_what_the_runs_vary_and_how_their_seeds_are_summed_up(on_digits: Path) -> None:
    assert (on_digits / "curves.png").read_bytes().startswith(PNG_SIGNATURE)
    report = (on_digits / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# digits: 2 epochs, at most 6 steps, 28 px, weights none, seed 0/1")
    assert "These runs differ in model.dropout" in report
    assert "mean ± standard deviation over its seeds" in report
    assert "![validation curves](curves.png)" in report


@pytest.mark.parametrize(("flags", "message"), [
    (["--vary", "trainer.seed=1,2"], "list them under seeds (--seeds)"),
    (["--vary", "data.test_fraction=0,0.2"], "the split is shared"),
    (["--vary", "model.dropuot=0,0.5"], "unknown key model.dropuot (did you mean model.dropout?)"),
    (["--vary", "model.dropout=0.5"], "needs two or more different values"),
    (["--vary", "model.dropout"], "--vary takes KEY=V1,V2"),
    (["--vary", "model.dropout=0,2"], "model.dropout must be a number of at least 0.0 and below 1.0, got 2"),
    (["--seeds", "0,x"], "--seeds takes whole numbers"),
    (["--seeds", ","], "--seeds takes whole numbers"),
    (["--seeds", "1,1"], "seeds repeat"),
])
def test_bad_seeds_and_vary_are_one_line_errors_before_training(tmp_path: Path, flags: list[str], message: str) -> None:
    outcome = zoo(["compare", "--archs", "small_cnn", "--data", str(tmp_path), "--out", str(tmp_path / "c"), *flags])
    assert outcome.code == 2
    assert message in outcome.printed
    assert not (tmp_path / "c").exists()


def test_a_seed_where_the_other_row_wins_is_no_evidence_for_the_best(tmp_path: Path) -> None:
    from finetune.compare.results import paired_p_value

    def run(name: str, right: set[int]) -> dict:
        folder = tmp_path / name
        folder.mkdir()
        lines = ["path,label,predicted,probability"]
        lines += [f"/img/{i}.png,cat,{'cat' if i in right else 'dog'},0.9" for i in range(40)]
        (folder / "test_predictions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return {"run_dir": str(folder)}

    best, other = run("best", set(range(30))), run("other", set(range(20)))  # 10 discordant, all for best
    assert paired_p_value(best, other) == pytest.approx(2 / 2**10)
    assert paired_p_value(other, best) == 1.0, "the other run won every disputed image: no evidence for it as best"
    elsewhere = run("elsewhere", set(range(20, 40)))
    assert paired_p_value(best, elsewhere) < 1.0
    assert paired_p_value(best, {"run_dir": None}) is None


def test_too_few_models_for_a_significant_trend_is_said(comparison: Comparison) -> None:
    config = json.loads((comparison.out / "runs" / "small_cnn" / "summary.json").read_text())["config"]
    three = [_row(comparison, f"net{depth}", depth, 40.0 - depth, [30.0 - depth, 50.0 - depth], p_value=0.01)
             for depth in (5, 11, 18)]
    said = " ".join(findings(three, three, [config]))
    assert "No significant depth trend here (Spearman ρ = -1.00, p = 0.33, over 3 models that learned)" in said
    assert "the smallest p any ordering can give is 0.33, so no trend could reach p < 0.05" in said
    five = [_row(comparison, f"net{depth}", depth, 40.0 - depth, [30.0 - depth, 50.0 - depth], p_value=0.01)
            for depth in (5, 8, 11, 16, 18)]
    assert "smallest p any ordering" not in " ".join(findings(five, five, [config]))


def test_latencies_timed_under_load_or_inside_each_others_spread_are_flagged(comparison: Comparison) -> None:
    from finetune.compare.findings import _latency_warnings
    from finetune.compare.speed import OtherLoad

    small = _row(comparison, "small_cnn", 5, 12.0, [8.7, 16.4], latency=[0.9, 1.1])
    resnet = _row(comparison, "resnet18", 18, 4.0, [2.3, 7.1], latency=[3.8, 4.2])
    assert _latency_warnings([{**small, "predict_other_load": 0.1}, {**resnet, "predict_other_load": 0.0}]) == []
    said = " ".join(_latency_warnings([{**small, "predict_other_load": 1.6}, resnet]))
    assert "Unreliable latencies: other processes competed for the cores while small_cnn (1.6 cores busy)" in said
    overlapping = {**small, "predict_ms_per_image_iqr": [0.9, 3.9]}
    assert "Latency intervals overlap for small_cnn and resnet18" in " ".join(_latency_warnings([overlapping, resnet]))

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with OtherLoad() as load:
            time.sleep(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert load.cores is not None
    assert load.cores >= 0.5


def test_cost_is_the_trained_networks_at_the_runs_image_size(comparison: Comparison) -> None:
    resnet = results(comparison.out)["resnet18"]
    import zoo

    registry = zoo.summarize(zoo.get_spec("resnet18"))
    # 3 classes at 32 px: a 512×3 head instead of 512×1000, and (32/224)² of the FLOPs of the default size
    assert resnet["params"] == registry["params"] - 512 * 997 - 997
    assert resnet["gflops"] == pytest.approx(registry["gflops"] * (32 / 224) ** 2, rel=0.15)


def test_imagenet_figures_never_share_an_axis_with_the_users_errors(comparison: Comparison, monkeypatch,
                                                                    tmp_path: Path) -> None:
    from finetune.compare import plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: drawn.append(figure))
    small = _row(comparison, "small_cnn", 5, 12.0, [8.7, 16.4])
    resnet = {**_row(comparison, "resnet18", 18, 4.0, [2.3, 7.1]), "imagenet_top1_error": 30.24,
              "ilsvrc_top5_error": 3.57}
    plots.plot_depth_vs_error([small, resnet], tmp_path / "depth.png", "t")
    ours, published = drawn[0].axes
    ours_values = {float(y) for line in ours.get_lines() for y in line.get_ydata()}
    published_values = {float(y) for line in published.get_lines() for y in line.get_ydata()}
    assert {12.0, 4.0} <= ours_values
    assert not ours_values & {30.24, 3.57}
    assert published_values == {30.24, 3.57}
    assert "not your data" in published.get_title()


def test_ctrl_c_inside_a_comparison_prints_the_compare_command(tmp_path: Path, monkeypatch, capsys) -> None:
    from finetune.training.saving import LastCheckpoint

    original = LastCheckpoint.on_train_epoch_end

    def then_interrupt(self, trainer, module) -> None:
        original(self, trainer, module)
        raise KeyboardInterrupt  # as Ctrl-C during the first epoch's end

    monkeypatch.setattr(LastCheckpoint, "on_train_epoch_end", then_interrupt)
    images, out = make_image_folder(tmp_path / "images", per_class=4), tmp_path / "comparison"
    with pytest.raises(SystemExit) as stopped:
        main(["compare", "--archs", "small_cnn", "--data", str(images), "--out", str(out), *QUICK])
    assert stopped.value.code == 130
    err = capsys.readouterr().err
    assert f"continue with: zoo compare --out {out}" in err
    assert "zoo finetune --resume" not in err
