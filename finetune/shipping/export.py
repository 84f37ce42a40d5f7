"""``export``: a fine-tuned model as a bundle that runs without Lightning (safetensors, TorchScript, ONNX).

Every file is verified as it is written: the exported model and the PyTorch model run on the same batch,
and the export fails when their logits differ by more than ``TOLERANCE``. The bundle is written in a folder
beside ``out`` that takes its place only when complete, so an interrupted or failed export never looks
complete, and one with ``force`` leaves the previous bundle whole.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

import zoo
from finetune.names import EXPORT_FORMATS
from finetune.runtime.folders import check_out_folder
from finetune.shipping.model_card import model_card
from finetune.shipping.settings import ExportSettings
from finetune.shipping.sources import Source, load_source
from zoo._io import (
    TEMPORARY_MARK,
    DiskError,
    check_space,
    replacing_folder,
    write_atomic,
    write_error,
    write_text_atomic,
)
from zoo.bundle import (
    METADATA_FILE,
    MODEL_CARD_FILE,
    ONNX_FILE,
    TIMM_CONFIG_FILE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    BundleMetadata,
    ModelMetadata,
    build_network,
)
from zoo.errors import ZooError, describe_error
from zoo.interop import bundle_model, header, plain_state_dict, write_timm_config
from zoo.records import model_fields
from zoo.registry import get_spec

BUNDLE_FILES = (METADATA_FILE, WEIGHTS_FILE, TORCHSCRIPT_FILE, ONNX_FILE, TIMM_CONFIG_FILE, MODEL_CARD_FILE)
TOLERANCE = 1e-4  # largest accepted logit difference, float32
ONNX_OPSET = 18


class ExportError(ZooError):
    """An export that cannot be written, or whose file does not reproduce the model."""


@dataclass(frozen=True)
class ExportResult:
    """The bundle folder and, per format written, the largest logit difference to the PyTorch model."""

    out_dir: Path
    differences: dict[str, float]


@dataclass(frozen=True)
class _Format:
    name: str
    file: str
    write: Callable[[Path], None]
    run: Callable[[Path, Tensor], Tensor]
    # Written straight into the staging folder, not renamed into place: the file is read there by its own name
    # (timm's local-dir reads config.json); a failed check discards the whole staging folder.
    in_place: bool = False


def _write_safetensors(network: nn.Module, metadata: BundleMetadata, path: Path) -> None:
    from safetensors.torch import save_file

    # The published architecture's key names (fc.weight, not zoo's fc.linear.weight), so plain timm and torchvision
    # load the file; clones, since safetensors refuses tensors that share memory, which tied weights would.
    tensors = {key: value.detach().clone().contiguous() for key, value in plain_state_dict(network).items()}
    save_file(tensors, str(path), metadata={"format": "pt", **header(metadata)})
    # safetensors creates its file owner-only; a bundle is meant to be shared like the other files in it.
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _run_safetensors(metadata: ModelMetadata, path: Path, batch: Tensor) -> Tensor:
    from safetensors.torch import load_file

    return build_network(metadata, load_file(str(path)), str(path))(batch)


@contextlib.contextmanager
def _torchscript_deprecation_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, yet it is the one format torch alone loads.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        yield


def _write_torchscript(network: nn.Module, example: Tensor, path: Path) -> None:
    with _torchscript_deprecation_silenced():
        # Tracing handles every registry model (googlenet's scripted form returns a named tuple);
        # check_trace is skipped because the file itself is verified against the model afterwards.
        torch.jit.save(torch.jit.trace(network, example, check_trace=False), str(path))


def _run_torchscript(path: Path, batch: Tensor) -> Tensor:
    with _torchscript_deprecation_silenced():
        return torch.jit.load(str(path), map_location="cpu")(batch)


def _write_onnx(network: nn.Module, example: Tensor, metadata: BundleMetadata, path: Path) -> None:
    import onnx

    # The dynamo exporter: the legacy one cannot export small_cnn's adaptive pooling at 28 px.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it narrates every step
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network, (example,), str(path), dynamo=True, external_data=False, opset_version=ONNX_OPSET,
            input_names=["images"], output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, header(metadata))  # the classes and preprocessing travel with the graph
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))


def _run_onnx(path: Path, batch: Tensor) -> Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0])


def _run_torchvision(metadata: BundleMetadata, path: Path, batch: Tensor) -> Tensor:
    from safetensors.torch import load_file

    model = bundle_model(metadata)
    model.load_state_dict(load_file(str(path)))  # strict: every key of torchvision's own network, nothing else
    return model.eval()(batch)


def _run_timm(path: Path, batch: Tensor) -> Tensor:
    import timm

    # The bundle folder as timm's local-dir: config.json and model.safetensors, read by timm alone.
    return timm.create_model(f"local-dir:{path.parent}", pretrained=True).eval()(batch)


def _formats(network: nn.Module, metadata: BundleMetadata, example: Tensor) -> tuple[_Format, ...]:
    """Every format in the order of ``EXPORT_FORMATS``: how to write it, and how to run the written file."""
    return (
        _Format("safetensors", WEIGHTS_FILE, partial(_write_safetensors, network, metadata),
                partial(_run_safetensors, metadata)),
        _Format("torchscript", TORCHSCRIPT_FILE, partial(_write_torchscript, network, example), _run_torchscript),
        _Format("onnx", ONNX_FILE, partial(_write_onnx, network, example, metadata), _run_onnx),
    )


def _library_formats(network: nn.Module, metadata: BundleMetadata) -> tuple[_Format, ...]:
    """How the bundle's own library loads it, checked like a format: torchvision reads model.safetensors into
    ``get_model(name, num_classes=N)``; timm needs its config.json beside it."""
    if metadata.library == "torchvision":
        # Nothing to write: torchvision reads the weights file as it is.
        return (_Format("torchvision", WEIGHTS_FILE, lambda path: None, partial(_run_torchvision, metadata),
                        in_place=True),)
    if metadata.library == "timm":
        write = partial(write_timm_config, metadata, plain_state_dict(network))
        return (_Format("timm", TIMM_CONFIG_FILE, write, _run_timm, in_place=True),)
    return ()


def _write_verified(entry: _Format, out: Path, batch: Tensor, reference: Tensor) -> float:
    """Write ``entry`` into ``out`` (atomically, unless it is written in place), kept only when it reproduces
    ``reference``; the largest difference."""
    differences = []

    def write(path: Path) -> None:
        try:
            entry.write(path)
            with torch.no_grad():
                differences.append((entry.run(path, batch) - reference).abs().max().item())
        except OSError:
            raise  # a full or read-only disk: the caller names the folder and what to free
        except Exception as error:  # exporters fail in many ways; the user gets one line
            raise ExportError(f"{entry.name} export failed: {describe_error(error)}") from error
        if not differences[0] <= TOLERANCE:  # written so that NaN fails too
            raise ExportError(
                f"{entry.name} export does not reproduce the model: logits differ by up to {differences[0]:.3g} "
                f"(limit {TOLERANCE:g})"
            )

    if entry.in_place:
        write(out / entry.file)
    else:
        write_atomic(out / entry.file, write)
    return differences[0]


def bundle_metadata(source: Source) -> BundleMetadata:
    """The content of ``zoo.json`` before the exports are added.

    Exported graphs output raw logits: its ``temperature`` divides them before the softmax for calibrated
    probabilities.
    """
    model = source.model.metadata
    spec = get_spec(model.arch)
    # The model's own fields only: a bundle re-exported from a bundle gets its figures and versions anew.
    return BundleMetadata(**model_fields(model), library=spec.library, model_name=spec.library_name,
                          model_args=dict(spec.library_args) or None, data=source.measured.get("data"),
                          validation=source.measured["validation"], test=source.measured["test"],
                          zoo_version=zoo.__version__, torch_version=torch.__version__)


def _check_out(out: Path, force: bool) -> None:
    check_out_folder(out)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise ExportError(f"{out} is not empty: choose another --out, or pass --force to replace the bundle in it")
    # --force replaces the whole folder (the new bundle is swapped in only once complete): other files would go.
    # README.md and config.json are a bundle's only beside its zoo.json: elsewhere they are likely the user's own.
    ours = BUNDLE_FILES if (out / METADATA_FILE).is_file() else set(BUNDLE_FILES) - {MODEL_CARD_FILE, TIMM_CONFIG_FILE}
    others = sorted(path.name for path in out.iterdir() if path.name not in ours and TEMPORARY_MARK not in path.name)
    if others:
        raise ExportError(f"{out} holds files that are not a bundle's ({', '.join(others[:3])}"
                          f"{', …' if len(others) > 3 else ''}): --force would delete them; move them out of it "
                          "or choose another --out")


def export(source: str | Path, formats: Sequence[str], out: Path, force: bool = ExportSettings.force) -> ExportResult:
    """Write the bundle of ``source`` (run folder, ``.ckpt`` or bundle) to ``out``: weights, zoo.json, ``formats``."""
    unknown = [name for name in formats if name not in EXPORT_FORMATS]
    if unknown:
        raise ExportError(f"unknown export format {', '.join(unknown)}: choose from {', '.join(EXPORT_FORMATS)} or all")
    out = Path(out)
    _check_out(out, force)
    loaded = load_source(source, device="cpu")
    metadata = bundle_metadata(loaded)
    network = loaded.model.network
    size = metadata.image_size
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, size, size, generator=generator)
    # Another batch size than the traced example: the check also proves the batch dimension is free.
    batch = torch.randn(3, 3, size, size, generator=generator)
    with torch.no_grad():
        reference = network(batch)
    # The weights belong to every bundle: zoo.load rebuilds the model from them.
    chosen = [entry for entry in _formats(network, metadata, example)
              if entry.name == "safetensors" or entry.name in formats]
    chosen += _library_formats(network, metadata)
    weights = sum(tensor.numel() * tensor.element_size() for tensor in network.state_dict().values())
    # Each format holds the weights once; checked first, as ONNX's writer aborts the process on a full disk.
    check_space(out.parent, needed=int(1.2 * weights * len(chosen)) + 2**20, largest=int(1.05 * weights))
    try:
        # The bundle is written and verified in a folder beside out, which takes out's place only when complete:
        # a full disk or a failed check (with --force too) leaves the previous bundle as it was.
        with replacing_folder(out) as staging:
            differences = {entry.name: _write_verified(entry, staging, batch, reference) for entry in chosen}
            exports = {entry.name: {"file": entry.file, "max_abs_diff": differences[entry.name]} for entry in chosen}
            final = metadata.model_copy(update={"exports": exports})
            write_text_atomic(staging / MODEL_CARD_FILE, model_card(final))
            write_text_atomic(staging / METADATA_FILE, json.dumps(final.to_dict(), indent=2) + "\n")
    except DiskError as error:
        if not isinstance(error.__cause__, OSError):
            raise
        # Named after out, not after the hidden staging folder the file was in.
        raise write_error(out, error.__cause__) from error.__cause__
    return ExportResult(out, differences)
