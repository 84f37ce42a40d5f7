"""What a run prints: Lightning's INFO lines and its warnings about zoo's own layout are dropped, by logger level
and by the warning's category and module; everything else, and zoo's own lines, still show."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import pytest
from lightning_fabric.utilities.warnings import PossibleUserWarning
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from finetune.runtime.console import lightning_quieted, say


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def lightning_lines() -> Iterator[list[str]]:
    """What reaches the handlers of Lightning's loggers (pytorch_lightning's and lightning_fabric's)."""
    kept = _Kept()
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric")]
    for logger in loggers:
        logger.addHandler(kept)
    yield kept.messages
    for logger in loggers:
        logger.removeHandler(kept)


def test_lightning_info_lines_are_dropped_and_its_warnings_kept(lightning_lines: list[str]) -> None:
    with lightning_quieted():
        rank_zero_info("GPU available: False, used: False")
        logging.getLogger("pytorch_lightning.accelerators.cuda").info("LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]")
        logging.getLogger("lightning_fabric.utilities.distributed").info("Initializing distributed: GLOBAL_RANK: 0")
        logging.getLogger("pytorch_lightning.trainer").warning("a problem the user must see")
    assert lightning_lines == ["a problem the user must see"]
    rank_zero_info("after the run")  # the levels are restored: a caller's own Lightning use is as it was
    assert lightning_lines[-1] == "after the run"


def _warn(category: type[Warning], module: str) -> None:
    warnings.warn_explicit("a warning", category, filename=f"{module.replace('.', '/')}.py", lineno=1, module=module)


@pytest.mark.parametrize(("category", "module"), [
    (UserWarning, "pytorch_lightning.callbacks.model_checkpoint"),  # the run folder is not empty
    (FutureWarning, "pytorch_lightning.utilities._pytree"),
    (PossibleUserWarning, "pytorch_lightning.trainer.connectors.data_connector"),  # few workers
    (PossibleUserWarning, "pytorch_lightning.loops.fit_loop"),  # frozen BatchNorm in eval mode
])
def test_warnings_from_zoos_layout_are_dropped_by_category_and_module(category: type[Warning], module: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with lightning_quieted():
            _warn(category, module)
        _warn(category, module)  # the filters are removed afterwards
    assert len(caught) == 1


@pytest.mark.parametrize(("category", "module"), [
    (UserWarning, "pytorch_lightning.trainer.connectors.data_connector"),  # not a PossibleUserWarning
    (FutureWarning, "pytorch_lightning.loops.fit_loop"),
    (UserWarning, "finetune.training.module"),
])
def test_other_warnings_still_show(category: type[Warning], module: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with lightning_quieted():
            _warn(category, module)
    assert len(caught) == 1


def test_zoos_own_lines_come_from_the_first_process_only(capsys, monkeypatch) -> None:
    with lightning_quieted():
        say("precision: 32 (\x1b[31mred)")
    assert capsys.readouterr().out == "zoo: precision: 32 (\\x1b[31mred)\n"
    monkeypatch.setenv("LOCAL_RANK", "1")
    say("from a second process")
    assert capsys.readouterr().out == ""
