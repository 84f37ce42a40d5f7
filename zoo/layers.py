"""The layers of a network, one row each: geometry, output size, receptive field, parameters and FLOPs.

Output sizes are computed from each layer's geometry with floor((W + P_before + P_after − D(K − 1) − 1) / S) + 1
(ceil for ceil-mode pooling) and checked against a real forward pass on the meta device: a layer whose formula
and forward disagree is an error, never a silent row. Receptive fields come from ``zoo.receptive``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import flop_registry

from zoo.errors import ZooError, describe_error
from zoo.receptive import Field, FieldTracer, Unknown, image_field
from zoo.spec import ArchSpec

# Layers whose output has their input's shape: normalisation, activations, dropout.
SHAPE_KEEPING = (
    nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.modules.dropout._DropoutNd,
    nn.ReLU, nn.Hardtanh, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softmax, nn.LogSoftmax,
)


class LayerShapeError(ZooError):
    """A layer whose output-size formula disagrees with the forward pass."""


@dataclass(frozen=True)
class Geometry:
    """A sliding window per spatial axis (height, width); padding as (before, after) at this input size."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    ceil_mode: bool = False

    def output_size(self, size: Sequence[int]) -> tuple[int, int]:
        """The formula of the module docstring, per axis (with PyTorch's rule that a ceil-mode window starts inside)."""
        sizes = []
        for axis in range(2):
            before, after = self.padding[axis]
            span = size[axis] + before + after - self.dilation[axis] * (self.kernel[axis] - 1) - 1
            count = (-(-span // self.stride[axis]) if self.ceil_mode else span // self.stride[axis]) + 1
            if self.ceil_mode and (count - 1) * self.stride[axis] >= size[axis] + before:
                count -= 1
            sizes.append(count)
        return sizes[0], sizes[1]


@dataclass(frozen=True)
class LayerTable:
    """The layers of one forward pass, and the FLOPs of operations that ran outside any layer (functional code)."""

    image_size: int
    rows: list[Layer]
    flops_outside_layers: int


@dataclass(frozen=True)
class Layer:
    """One call of a layer in a forward pass of one image (``name#2`` for its second call)."""

    name: str
    type: str
    geometry: Geometry | None
    groups: int | None
    output_shape: tuple[int, ...]  # without the batch dim: [C, H, W] for feature maps
    receptive_field: tuple[int, int] | None  # (height, width) in pixels; None with ``note`` saying why
    params: int  # counted at the first call of a layer only, so the column sums to the network's
    flops: int  # 2 per multiply-accumulate, as zoo list counts them
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON row: 2-D values as [height, width]; a padding that differs per side as
        [before, after]."""
        geometry = self.geometry
        return {
            "name": self.name, "type": self.type,
            "kernel": list(geometry.kernel) if geometry else None,
            "stride": list(geometry.stride) if geometry else None,
            "padding": [before if before == after else [before, after] for before, after in geometry.padding]
            if geometry else None,
            "dilation": list(geometry.dilation) if geometry else None,
            "groups": self.groups,
            "output_shape": list(self.output_shape),
            "receptive_field": list(self.receptive_field) if self.receptive_field else None,
            "params": self.params, "flops": self.flops,
        }


def _pair(value: int | Sequence[int] | None, default: int | Sequence[int]) -> tuple[int, int]:
    value = default if value is None else value
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _same_padding(size: Sequence[int], kernel: tuple[int, int], stride: tuple[int, int],
                  dilation: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """TensorFlow's "same" padding at this input size, as timm's dynamic-padding layers apply it."""
    from timm.layers.padding import get_same_padding

    totals = [get_same_padding(size[axis], kernel[axis], stride[axis], dilation[axis]) for axis in range(2)]
    return (totals[0] // 2, totals[0] - totals[0] // 2), (totals[1] // 2, totals[1] - totals[1] // 2)


def _pads_itself(module: nn.Module) -> bool:
    """timm's Conv2dSame, MaxPool2dSame, AvgPool2dSame: padding 0 stored, the "same" padding added in forward."""
    if not type(module).__module__.startswith("timm."):
        return False
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    return isinstance(module, (Conv2dSame, MaxPool2dSame, AvgPool2dSame))


def geometry(module: nn.Module, size: Sequence[int]) -> Geometry | None:
    """The sliding window of a convolution or pooling layer at input size ``size`` (H, W); None for other layers."""
    if not isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return None
    kernel = _pair(module.kernel_size, 1)
    stride = _pair(module.stride, kernel)  # pooling's stride defaults to its kernel
    dilation = _pair(getattr(module, "dilation", 1), 1)
    ceil_mode = bool(getattr(module, "ceil_mode", False))
    if _pads_itself(module):
        return Geometry(kernel, stride, _same_padding(size, kernel, stride, dilation), dilation, ceil_mode)
    if isinstance(module.padding, str):  # torch's "valid", and "same" (stride 1, the odd pixel after)
        same = module.padding == "same"
        height, width = (dilation[axis] * (kernel[axis] - 1) if same else 0 for axis in range(2))
        return Geometry(kernel, stride, ((height // 2, height - height // 2), (width // 2, width - width // 2)),
                        dilation, ceil_mode)
    height, width = _pair(module.padding, 0)
    return Geometry(kernel, stride, ((height, height), (width, width)), dilation, ceil_mode)


def expected_shape(module: nn.Module, shape: Sequence[int]) -> tuple[int, ...] | None:
    """The output shape the layer's formula gives for an input of ``shape``; None for layers without one."""
    shape = tuple(shape)
    found = geometry(module, shape[-2:])
    if found is not None:
        channels = module.out_channels if isinstance(module, nn.Conv2d) else shape[-3]
        return (*shape[:-3], channels, *found.output_size(shape[-2:]))
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        height, width = _pair(module.output_size, shape[-2:])  # type: ignore[arg-type]
        return (*shape[:-2], height if height is not None else shape[-2], width if width is not None else shape[-1])
    if isinstance(module, nn.Linear):
        return (*shape[:-1], module.out_features)
    if isinstance(module, nn.Flatten):
        start, end = module.start_dim % len(shape), module.end_dim % len(shape)
        return (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])
    if isinstance(module, SHAPE_KEEPING):
        return shape
    return None


def is_layer(module: nn.Module) -> bool:
    """A module that computes something itself: a leaf, or one holding its own weights (timm's BatchNormAct2d)."""
    if isinstance(module, nn.Identity):
        return False
    own_tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return bool(own_tensors) or next(module.children(), None) is None


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((item for item in map(_first_tensor, value) if item is not None), None)
    return None


class _Recorder:
    """Forward hooks that turn each layer call into a row, and the FLOPs of the operations run inside it."""

    def __init__(self, network: nn.Module) -> None:
        self.tracer = FieldTracer(self._count)
        self._rows: list[Layer | None] = []  # in the order the calls start; filled when each ends
        self._active: list[int] = []  # the rows of the layer calls in progress, innermost last
        self._flops: list[int] = []
        self.flops_outside_layers = 0
        self._calls: dict[str, int] = {}
        self._handles = []
        for name, module in network.named_modules():
            if name and is_layer(module):
                self._handles.append(module.register_forward_pre_hook(self._enter))
                self._handles.append(module.register_forward_hook(
                    lambda module, inputs, output, name=name: self._leave(name, module, inputs, output)))

    def _count(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        formula = flop_registry.get(func.overloadpacket)
        if formula is None:
            return
        flops = int(formula(*args, **kwargs, out_val=out))
        if self._active:
            self._flops[self._active[-1]] += flops
        else:
            self.flops_outside_layers += flops

    def _enter(self, module: nn.Module, inputs: Any) -> None:
        self._active.append(len(self._rows))
        self._rows.append(None)
        self._flops.append(0)

    def _leave(self, name: str, module: nn.Module, inputs: Any, output: Any) -> None:
        index = self._active.pop()
        calls = self._calls[name] = self._calls.get(name, 0) + 1
        tensor, given = _first_tensor(output), _first_tensor(inputs)
        shape = tuple(tensor.shape) if tensor is not None else ()
        if given is not None and tensor is not None:
            expected = expected_shape(module, given.shape)
            if expected is not None and expected != shape:
                raise LayerShapeError(
                    f"layer {name} ({type(module).__name__}): its formula gives {list(expected[1:])} for an input of "
                    f"{list(given.shape[1:])}, but the forward pass gives {list(shape[1:])}; zoo's rule for "
                    f"{type(module).__name__} does not fit it, so no table is shown: report this with the architecture")
        field = self.tracer.field(tensor) if tensor is not None else None
        size = field.size if isinstance(field, Field) else None
        note = "not computed from the image" if field is None else field.reason if isinstance(field, Unknown) else None
        self._rows[index] = Layer(
            name=name if calls == 1 else f"{name}#{calls}", type=type(module).__name__,
            geometry=geometry(module, given.shape[-2:]) if given is not None and given.dim() == 4 else None,
            groups=module.groups if isinstance(module, nn.Conv2d) else None,
            output_shape=shape[1:], receptive_field=size,
            params=sum(p.numel() for p in module.parameters(recurse=False)) if calls == 1 else 0,
            flops=self._flops[index], note=note,
        )

    @property
    def rows(self) -> list[Layer]:
        return [row for row in self._rows if row is not None]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def trace_layers(network: nn.Module, image_size: int) -> LayerTable:
    """One row per layer call of ``network`` (eval mode) on one ``image_size`` image, in the order they run.

    The forward pass runs wherever the network is (the meta device costs nothing).
    """
    parameter = next(network.parameters(), None)
    image = torch.zeros(1, 3, image_size, image_size, device=parameter.device if parameter is not None else "meta")
    recorder = _Recorder(network)
    recorder.tracer.mark(image, image_field(image_size, image_size))
    try:
        with torch.no_grad(), recorder.tracer:
            network.eval()(image)
    finally:
        recorder.remove()
    return LayerTable(image_size, recorder.rows, recorder.flops_outside_layers)


def layer_table(spec: ArchSpec, image_size: int | None = None) -> LayerTable:
    """The layers of ``spec``'s published network at ``image_size`` (default: its own input size)."""
    size = spec.input_size if image_size is None else image_size
    if size < 1:
        raise ZooError(f"--image-size must be a positive number of pixels, got {size}")
    if spec.fixed_input_size and size != spec.input_size:  # a ViT would fail with an assertion inside timm
        raise ZooError(str(spec.input_size_problem(size)))
    with torch.device("meta"):
        network = spec.build()
    try:
        return trace_layers(network, size)
    except LayerShapeError:
        raise
    except (RuntimeError, ValueError, AssertionError) as error:  # a feature map shrunk below its kernel
        raise ZooError(f"{spec.name} cannot run on {size} px images ({describe_error(error)}): use --image-size "
                       f"{spec.min_input_size} or more") from error
