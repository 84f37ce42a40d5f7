"""The statistics behind every figure, against values computed by hand; temperature scaling on known logits."""

from __future__ import annotations

import math

import pytest
import torch

from finetune.results.calibration import (
    TEMPERATURE_RANGE,
    calibration_error,
    calibration_noise,
    fit_temperature,
    negative_log_likelihood,
)
from finetune.results.heldout import error_rates
from finetune.results.stats import chance_error, learned, mcnemar, spearman, top_k, wilson_interval

Z = 1.959963984540054  # the 97.5% normal quantile


def wilson_by_hand(errors: int, total: int) -> tuple[float, float]:
    p = errors / total
    centre = (p + Z**2 / (2 * total)) / (1 + Z**2 / total)
    half = Z / (1 + Z**2 / total) * math.sqrt(p * (1 - p) / total + Z**2 / (4 * total**2))
    return 100 * (centre - half), 100 * (centre + half)


@pytest.mark.parametrize(("errors", "total", "expected"), [
    (3, 20, (5.2369, 36.0419)),  # p = 0.15: centre 0.20639, half-width 0.15403
    (0, 10, (0.0, 27.7533)),  # no errors: the upper end is z²/(n + z²)
    (10, 10, (72.2467, 100.0)),
    (27, 270, (6.9639, 14.1584)),  # 10% of 270 test images: centre 0.10561, half-width 0.03597
])
def test_wilson_interval_matches_the_formula(errors: int, total: int, expected: tuple[float, float]) -> None:
    low, high = wilson_interval(errors, total)
    assert (low, high) == pytest.approx(expected, abs=1e-3)
    assert (low, high) == pytest.approx(wilson_by_hand(errors, total), abs=1e-9)


def test_wilson_interval_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="between 0 and the number of images"):
        wilson_interval(5, 4)


@pytest.mark.parametrize(("first_only", "second_only", "expected"), [
    (1, 8, 20 / 512),  # 2 × P(X ≤ 1), X ~ Bin(9, ½) = 2 × (1 + 9) / 2⁹
    (0, 5, 2 / 32),  # 2 × ½⁵
    (3, 3, 1.0),  # balanced discordance: capped at 1
    (0, 0, 1.0),  # no discordant pair: nothing to test
    (10, 30, 0.002221),  # 2 × P(X ≤ 10), X ~ Bin(40, ½)
])
def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs(
    first_only: int, second_only: int, expected: float
) -> None:
    both, neither = 50, 7  # concordant pairs do not enter the test
    first = [True] * both + [False] * neither + [True] * first_only + [False] * second_only
    second = [True] * both + [False] * neither + [False] * first_only + [True] * second_only
    result = mcnemar(first, second)
    assert (result.only_first_right, result.only_second_right) == (first_only, second_only)
    assert result.p_value == pytest.approx(expected, rel=1e-3)
    assert mcnemar(second, first).p_value == pytest.approx(result.p_value)  # two-sided


def test_chance_level_and_the_learned_verdict() -> None:
    assert chance_error([0, 0, 0, 1]) == 25.0  # always class 0: wrong once in four
    assert chance_error(list(range(10)) * 27) == pytest.approx(90.0)
    assert learned((10.0, 20.0), 25.0)
    assert not learned((10.0, 25.0), 25.0)


def test_top_k_stays_below_the_class_count() -> None:
    assert [top_k(n) for n in (2, 3, 4, 6, 10, 1000)] == [None, 2, 3, 5, 5, 5]


def test_error_rates_of_fixed_predictions() -> None:
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    logits = torch.nn.functional.one_hot(labels, 3).float() * 4
    logits[7] = torch.tensor([0.0, 1.0, 4.0])  # image 7's truth ranks second: a top-1 miss, a top-2 hit
    logits[8] = torch.tensor([1.0, 4.0, 0.0])  # images 8 and 9: the truth ranks last, a miss either way
    logits[9] = torch.tensor([0.0, 4.0, 1.0])
    rates = error_rates(logits, labels)
    assert rates.top1_error == 30.0
    assert rates.k == 2
    assert rates.topk_error == 20.0
    assert rates.top1_error_ci95 == pytest.approx(wilson_by_hand(3, 10), abs=1e-3)
    two_classes = error_rates(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    assert two_classes.k is None, "top-2 of 2 classes would always hit"
    assert two_classes.topk_error is None, "top-2 of 2 classes would always hit"


def test_spearman_trend_needs_three_points_with_spread() -> None:
    assert spearman([8, 18], [20.0, 10.0]) is None
    assert spearman([8, 18, 50], [20.0, 20.0, 20.0]) is None
    trend = spearman([5, 8, 18, 50], [30.0, 20.0, 25.0, 10.0])
    # Exact: of the 24 orderings, |ρ| ≥ 0.8 for the two perfect ones and the six at ±0.8 → 8/24.
    assert trend.rho == pytest.approx(-0.8)
    assert trend.count == 4
    assert trend.p_value == pytest.approx(8 / 24)
    perfect = spearman([8, 18, 50], [20.0, 15.0, 10.0])
    assert perfect.rho == pytest.approx(-1.0)
    assert perfect.p_value == pytest.approx(2 / 6)
    assert not perfect.significant
    five = spearman([5, 8, 11, 16, 19], [50.0, 40.0, 30.0, 20.0, 10.0])
    assert five.p_value == pytest.approx(2 / 120)
    assert five.significant


def test_temperature_scaling_recovers_a_known_overconfidence() -> None:
    generator = torch.Generator().manual_seed(0)
    calibrated = torch.randn(4000, 10, generator=generator) * 2
    labels = torch.multinomial(calibrated.softmax(dim=1), 1, generator=generator).squeeze(1)
    overconfident = calibrated * 3  # the same ranking, three times too sharp
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert negative_log_likelihood(overconfident, labels, temperature) < negative_log_likelihood(overconfident, labels)
    before = calibration_error(overconfident.softmax(dim=1), labels)
    after = calibration_error((overconfident / temperature).softmax(dim=1), labels)
    assert after < before / 3
    assert after < 3.0
    assert torch.equal((overconfident / temperature).argmax(1), overconfident.argmax(1)), "no prediction changes"


def test_temperature_is_fitted_even_when_every_validation_image_is_right() -> None:
    # Every image right but the softmax under-confident (0.73 on the right class): the likelihood still falls as T
    # falls, so T goes below 1, to the lower bound at most, and the validation ECE falls with it.
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 1])
    temperature = fit_temperature(logits, labels)
    assert TEMPERATURE_RANGE[0] <= temperature < 0.1
    assert calibration_error((logits / temperature).softmax(dim=1), labels) < 1.0 < calibration_error(
        logits.softmax(dim=1), labels)
    assert fit_temperature(torch.full((4, 3), float("nan")), torch.tensor([0, 1, 2, 0])) == 1.0


def test_a_perfectly_calibrated_models_ece_is_what_its_sample_allows() -> None:
    # One image at confidence 0.5 is right or wrong: |accuracy − 0.5| is 0.5 whatever happens, ECE 50 points.
    assert calibration_noise(torch.tensor([[0.5, 0.5]])) == pytest.approx(50.0)
    # Two in one bin: accuracy 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so the ECE is 25 points on average.
    assert calibration_noise(torch.tensor([[0.5, 0.5], [0.5, 0.5]])) == pytest.approx(25.0, abs=6.0)
    # Sure and right: nothing to miss.
    assert calibration_noise(torch.tensor([[1.0, 0.0, 0.0]] * 50)) == pytest.approx(0.0)
    # 1,000 images at 0.7 (one bin): E|mean − p| ≈ sqrt(2 p (1 − p) / (π n)) = 1.16 points.
    expected = 100 * math.sqrt(2 * 0.7 * 0.3 / (math.pi * 1000))
    assert calibration_noise(torch.tensor([[0.7, 0.3]] * 1000)) == pytest.approx(expected, rel=0.15)


def test_a_calibrated_softmax_measures_near_its_noise_and_an_overconfident_one_far_above() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 10, generator=generator) * 2
    labels = torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)  # calibrated by construction
    noise = calibration_noise(logits.softmax(dim=1))
    assert 2.0 < noise < 10.0  # 300 images over 15 bins
    assert calibration_error(logits.softmax(dim=1), labels) < 2 * noise
    assert calibration_error((logits * 3).softmax(dim=1), labels) > 3 * noise
