"""The layers point one way: zoo (the registry) knows nothing of Lightning, timm or the layers above it."""

from __future__ import annotations

import subprocess
import sys

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
for blocked in {blocked!r}:
    sys.modules[blocked] = None  # importing it now raises ImportError
import {package}
for info in pkgutil.walk_packages({package}.__path__, "{package}."):
    importlib.import_module(info.name)
"""


def _imports_without(package: str, blocked: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    code = IMPORT_EVERY_MODULE.format(package=package, blocked=blocked)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_every_zoo_module_imports_without_lightning_timm_or_the_layers_above() -> None:
    # timm is imported only when a timm/<name> model is asked for (zoo/timm_bridge.py, inside its functions).
    result = _imports_without("zoo", ("pytorch_lightning", "lightning_fabric", "timm", "finetune", "zoo_cli"))
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_finetune_module_imports_without_the_cli() -> None:
    result = _imports_without("finetune", ("zoo_cli",))
    assert result.returncode == 0, result.stderr[-2000:]
