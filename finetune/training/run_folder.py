"""A run's folder: a new one made safely, or an existing one reopened by ``--resume`` (only settings that do not
change what the run is may differ), and the schedule more epochs on an ended run continue with."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import zoo
from finetune.config import CONFIG_FILE, ConfigError, RunConfig, config_fields, load_config, merge, resumable_settings
from finetune.data.split import has_split, load_split
from finetune.runtime.console import is_launched_worker, say
from finetune.shipping.sources import read_checkpoint
from finetune.training.run_lock import lock_run_folder
from finetune.training.saving import LAST_CHECKPOINT
from finetune.training.setup import Setup
from zoo._io import remove_temporaries
from zoo.errors import ZooError
from zoo.tables import listed


def new_run_dir(config: RunConfig) -> Path:
    """The run folder for a new run; refuses one that already holds files (nothing is overwritten)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.out) if config.out else Path("runs") / f"{config.model.arch.replace('/', '_')}-{stamp}"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file, not a folder: choose another --out")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"run folder {run_dir} already holds a run: choose another --out, or continue it with --resume {run_dir}"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the run folder {run_dir}: {error.strerror or error}; choose another --out"
                          ) from error
    lock_run_folder(run_dir)  # two runs started at once with the same --out: the second stops here
    return run_dir


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> RunConfig:
    """The saved configuration of ``run_dir`` with ``overrides`` (e.g. more epochs) applied.

    Only settings declared resumable (``resumable_settings``) may differ from the saved ones; a broken
    ``last.ckpt`` is refused in one line before Lightning opens it.
    """
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"cannot resume {run_dir}: it is not a run folder of zoo finetune (no {CONFIG_FILE}); "
                          "start a new run with zoo finetune --out")
    saved = load_config(run_dir / CONFIG_FILE)
    config = merge(saved, {**{key: value for key, value in overrides.items() if key != "out"}, "out": str(run_dir)})
    if overrides.get("out") is not None and Path(overrides["out"]).resolve() != run_dir.resolve():
        raise ConfigError(f"--resume continues {run_dir} in place: leave out --out, or start a new run with --out")
    resumable = resumable_settings()
    # Every section's settings; the top-level out is the run folder itself, checked above.
    changed = [key for key, _, _ in config_fields()
               if "." in key and key not in resumable and _value(config, key) != _value(saved, key)]
    if changed:
        them = "it" if len(changed) == 1 else "them"
        raise ConfigError(f"--resume continues {run_dir} with its saved settings, and {', '.join(changed)} would "
                          f"change what it is: leave {them} out, or start a new run with --out")
    lock_run_folder(run_dir)  # before anything is removed or rewritten: another process may be training it
    # Node 0's own: on another node these could be the files node 0 is writing now.
    removed = [] if is_launched_worker() else remove_temporaries(run_dir)
    if removed:
        say(f"removed {len(removed)} half-written files a killed run left in {run_dir}")
    if (run_dir / LAST_CHECKPOINT).is_file():
        try:
            content = read_checkpoint(run_dir / LAST_CHECKPOINT)
        except ZooError as error:
            raise ConfigError(f"cannot resume {run_dir}: {error}; or delete {LAST_CHECKPOINT} to start the run again "
                              "from epoch 1 with --resume") from error
        started = int(content.get("epoch", 0)) + 1  # the epoch the checkpoint was saved in (Lightning counts from 0)
        if config.trainer.epochs is not None and config.trainer.epochs < started:
            raise ConfigError(f"{run_dir} has already trained {started} epochs, more than --epochs "
                              f"{config.trainer.epochs}: leave --epochs out, or give more to train on (e.g. --epochs "
                              f"{started + 1})")
        arch, classes = content["zoo"]["arch"], content["zoo"]["classes"]
        saved_classes = load_split(run_dir).classes if has_split(run_dir) else classes
        if arch != zoo.get_spec(config.model.arch).name:
            foreign = f"holds a {arch} network, not this run's {config.model.arch}"
        elif classes != saved_classes:
            foreign = f"was trained on other classes ({listed(classes)}) than this run's ({listed(saved_classes)})"
        else:
            return config
        raise ConfigError(f"{run_dir / LAST_CHECKPOINT} {foreign}: put back the run's own last.ckpt, or delete it "
                          "to start the run again from epoch 1 with --resume")
    return config


def _value(config: RunConfig, key: str) -> Any:
    section, name = key.split(".")
    value = getattr(getattr(config, section), name)
    return str(Path(value).resolve()) if key == "data.path" and Path(value).exists() else value


def restart_schedule(checkpoint: Path, config: RunConfig, setup: Setup, worker: bool) -> bool:
    """On a resume, the learning-rate schedule the run continues with; True when it is a warm restart.

    A run that had finished its epochs, or stopped early, ended its schedule near a learning rate of 0: more
    epochs on it would barely train. They get their own warm-up and cosine decay instead, from the last step.
    """
    content = read_checkpoint(checkpoint)
    schedule = content.get("schedule") or {}
    setup.module.restart_step = int(schedule.get("start") or 0)
    done, step = int(content.get("epoch", 0)) + 1, int(content.get("global_step", 0))
    stopped = any(int(state.get("stopped_epoch", 0) or 0) > 0 for name, state in content.get("callbacks", {}).items()
                  if name.startswith("EarlyStop") and isinstance(state, dict))
    ended = stopped or (schedule.get("total") is not None and step >= int(schedule["total"]))
    if not ended or config.trainer.epochs is None or config.trainer.epochs <= done:
        return False
    setup.module.restart_step = step
    if not worker:
        how = f"stopped early after epoch {done}" if stopped else f"finished its {done} epochs"
        say(f"warm restart: the run {how}, its learning rate decayed to the end; epochs {done + 1}-"
            f"{config.trainer.epochs} get a new warm-up and cosine decay from lr {config.optim.lr}")
    return True
