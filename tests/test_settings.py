"""Each command's settings dataclass is the one source of its flags' defaults and its function's."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from finetune.data.settings import OptimizeSettings
from finetune.inspection.settings import CleanSettings, ExplainSettings
from finetune.results.settings import EvaluateSettings
from finetune.shipping.settings import ExportSettings, ListenSettings, PredictSettings, ServeSettings
from zoo_cli.main import build_parser


def _functions() -> list[tuple[type, Callable[..., Any], list[str]]]:
    from finetune.data.shards import optimize_folder
    from finetune.inspection.clean import clean
    from finetune.inspection.explain import explain
    from finetune.results.evaluate import evaluate
    from finetune.shipping.export import export
    from finetune.shipping.predict import predict
    from finetune.shipping.serve.server import serve

    return [(CleanSettings, clean, ["clean", "data", "--out", "o"]),
            (ExplainSettings, explain, ["explain", "s", "i", "--out", "o"]),
            (EvaluateSettings, evaluate, ["evaluate", "s"]), (PredictSettings, predict, ["predict", "s", "p"]),
            (ExportSettings, export, ["export", "s", "--out", "o"]), (ListenSettings, serve, ["serve", "s"]),
            (ServeSettings, serve, ["serve", "s"]), (OptimizeSettings, optimize_folder, ["data", "optimize", "d",
                                                                                          "--out", "o"])]


CASES = _functions()


@pytest.mark.parametrize(("settings", "function", "words"), CASES, ids=[case[0].__name__ for case in CASES])
def test_the_flags_and_the_function_default_to_the_settings(settings: type, function: Callable[..., Any],
                                                            words: list[str]) -> None:
    args = vars(build_parser().parse_args(words))
    parameters = inspect.signature(function).parameters
    for item in dataclasses.fields(settings):
        if "help" not in item.metadata or item.metadata.get("required"):
            continue
        assert args[item.name] == item.default, item.name
        if item.name in parameters:
            assert parameters[item.name].default == item.default, item.name
