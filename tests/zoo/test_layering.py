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


REGISTRY_COMMAND = """
import sys
sys.modules["torch"] = None  # importing it now raises ImportError
from zoo_cli.main import main
sys.exit(main({argv!r}))
"""


def test_the_registry_commands_run_without_torch() -> None:
    # zoo list, zoo info and zoo weights print data (zoo/metadata.json): importing torch would cost them seconds.
    for argv in (["list"], ["list", "--format", "json"], ["info", "resnet50"], ["info", "efficientnet_lite0"],
                 ["weights", "vgg16_bn", "--tag", "all"], ["weights", "efficientnet_lite0"]):
        result = subprocess.run([sys.executable, "-c", REGISTRY_COMMAND.format(argv=argv)], capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, (argv, result.stderr[-2000:])
        assert result.stdout, (argv, result.stderr[-2000:])


def test_the_runtime_folder_serves_the_flow_and_imports_none_of_it() -> None:
    # finetune/runtime is what every stage shares with the machine: training, results, comparison, inspection and
    # shipping build on it, never the reverse.
    flow = ("finetune.training", "finetune.results", "finetune.compare", "finetune.inspection", "finetune.shipping")
    result = _imports_without("finetune.runtime", ("zoo_cli", *flow))
    assert result.returncode == 0, result.stderr[-2000:]
