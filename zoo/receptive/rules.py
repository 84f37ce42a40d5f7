"""How each ATen operation maps the fields of its inputs to the field of its output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo.receptive.fields import (
    FLAT,
    MAP,
    WHOLE,
    Axis,
    Field,
    Traced,
    Untraceable,
    moved,
    normal,
    spread_over_map,
    union,
    whole,
)

aten = torch.ops.aten


@dataclass(frozen=True)
class Call:
    """One operation: its arguments by name, those computed from the image with their fields, its first output."""

    arguments: dict[str, Any]
    traced: list[tuple[Field, Tensor]]
    out: Tensor

    @property
    def fields(self) -> list[Field]:
        return [field for field, _ in self.traced]

    def field(self, name: str) -> Field:
        """The field of the argument ``name``."""
        value = self.arguments[name]
        for field, tensor in self.traced:
            if tensor is value:
                return field
        raise Untraceable(f"its {name} is not computed from the image")


def _nchw(field: Field) -> Field:
    if field.kind != MAP or field.dims != (-2, -1):
        raise Untraceable("a window over a tensor that is not laid out N×C×H×W")
    return field


def _pairs(value: Sequence[int] | int, default: Sequence[int]) -> tuple[int, int]:
    """An ATen int[2] argument as (height, width): one value means both, an empty list the default."""
    values = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]  # type: ignore[arg-type]
    values = values or [int(v) for v in default]
    return values[0], values[-1]


def _sliding(field: Field, out: Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
             dilation: Sequence[int]) -> Field:
    axes = []
    for k, axis in enumerate(_nchw(field).axes):
        starts = np.arange(out.shape[-2 + k]) * stride[k] - padding[k]
        axes.append(axis.window(starts, starts + dilation[k] * (kernel[k] - 1),
                                None if axis.jump is None else axis.jump * stride[k]))
    return Field(MAP, (-2, -1), (axes[0], axes[1]))


def _convolution(call: Call) -> Field:
    a = call.arguments
    if a["transposed"]:
        raise Untraceable("a transposed convolution")
    kernel = a["weight"].shape[-2:]
    return _sliding(call.field("input"), call.out, kernel, a["stride"], a["padding"], a["dilation"])


def _max_pool(call: Call) -> Field:
    a = call.arguments
    kernel = _pairs(a["kernel_size"], ())
    return _sliding(call.field("self"), call.out, kernel, _pairs(a["stride"], kernel), _pairs(a["padding"], (0,)),
                    _pairs(a["dilation"], (1,)))


def _avg_pool(call: Call) -> Field:
    a = call.arguments
    kernel = _pairs(a["kernel_size"], ())
    return _sliding(call.field("self"), call.out, kernel, _pairs(a["stride"], kernel), _pairs(a["padding"], (0,)),
                    (1, 1))


def _adaptive_pool(call: Call) -> Field:
    field = _nchw(call.field("self"))
    axes = []
    for k, axis in enumerate(field.axes):
        size_in, size_out = len(axis.lo), call.out.shape[-2 + k]
        outputs = np.arange(size_out)
        starts = (outputs * size_in) // size_out  # torch's windows: floor(o·in/out) to ceil((o+1)·in/out)
        ends = -((-(outputs + 1) * size_in) // size_out) - 1
        # Windows of one size and spacing keep the units evenly spaced; uneven ones do not.
        jump = axis.jump * (size_in // size_out) if axis.jump is not None and size_in % size_out == 0 else None
        axes.append(axis.window(starts, ends, jump))
    return Field(MAP, (-2, -1), (axes[0], axes[1]))


def _padded(call: Call, index: Callable[[np.ndarray, int], np.ndarray] | None) -> Field:
    """Padding ``[left, right, top, bottom]``; ``index`` maps padded positions onto real units (None: constant)."""
    field = _nchw(call.field("self"))
    pad = list(call.arguments["pad" if "pad" in call.arguments else "padding"]) + [0, 0, 0, 0]
    axes = []
    for k, (axis, before) in enumerate(zip(field.axes, (pad[2], pad[0]), strict=True)):
        positions = np.arange(call.out.shape[-2 + k]) - before
        if index is None:
            axes.append(axis.window(positions, positions, axis.jump))
        else:
            axes.append(axis.select(index(positions, len(axis.lo))))
    return Field(MAP, (-2, -1), (axes[0], axes[1]))


def _reflect(positions: np.ndarray, size: int) -> np.ndarray:
    positions = np.abs(positions)
    return np.where(positions > size - 1, 2 * (size - 1) - positions, positions)


def _reduce(call: Call) -> Field:
    field = call.fields[0]
    ndim = call.arguments["self"].dim()
    dims = call.arguments.get("dim")
    reduced = set(range(ndim)) if dims in (None, []) else {normal(d, ndim) for d in dims}
    keep = bool(call.arguments.get("keepdim", False))
    spatial = {ndim + dim for dim in field.dims}
    if field.kind == WHOLE or not reduced & spatial:
        kept = [d for d in range(ndim) if keep or d not in reduced]
        return moved(field, ndim, call.out.dim(), lambda d: kept.index(d) if d in kept else None)  # type: ignore[return-value]
    if not spatial <= reduced:
        raise Untraceable("a reduction over one spatial dim")
    if field.kind == MAP and keep:
        return Field(MAP, field.dims, tuple(Axis(a.lo.min(keepdims=True), a.hi.max(keepdims=True),  # type: ignore[arg-type]
                                                 None if a.jump is None else a.jump * len(a.lo)) for a in field.axes))
    return whole(field)


def _view_groups(before: Sequence[int], after: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """The dims of a reshape in matching groups: each group of input dims holds what its group of output dims does."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(before) and j < len(after):
        left, right = [i], [j]
        size_left, size_right = before[i], after[j]
        while size_left != size_right:
            if size_left < size_right:
                i += 1
                left.append(i)
                size_left *= before[i]
            else:
                j += 1
                right.append(j)
                size_right *= after[j]
        groups.append((left, right))
        i, j = i + 1, j + 1
    if groups:  # trailing dims of size 1
        groups[-1][0].extend(range(i, len(before)))
        groups[-1][1].extend(range(j, len(after)))
    return groups


def _view(call: Call) -> Traced:
    """A reshape keeps a field when the map's units stay whole: flattened with H×W innermost (FLAT), or split back."""
    field = call.fields[0]
    before, after = tuple(call.arguments["self"].shape), tuple(call.out.shape)
    if field.kind == WHOLE:
        return field
    spatial = [len(before) + dim for dim in field.dims]
    sizes = tuple(len(axis.lo) for axis in field.axes)
    for left, right in _view_groups(before, after):
        if spatial[-1] not in left:
            continue
        while len(right) > 1 and after[right[0]] == 1:  # a dim of size 1 before the units holds none of them
            right = right[1:]
        if left[-len(spatial):] != spatial:
            break  # a dim after the map's units is merged with them: they no longer stay whole
        if len(right) == 1:
            return Field(FLAT, (right[0] - len(after),), field.axes)
        if tuple(after[d] for d in right[-2:]) == sizes:
            return Field(MAP, (right[-2] - len(after), right[-1] - len(after)), field.axes)
        break
    raise Untraceable("a reshape that splits or mixes the units of a map")


def _permute(call: Call) -> Traced:
    order = [normal(d, call.out.dim()) for d in call.arguments["dims"]]
    return moved(call.fields[0], call.out.dim(), call.out.dim(), order.index)


def _transpose(call: Call) -> Traced:
    ndim = call.out.dim()
    first, second = (normal(call.arguments[name], ndim) for name in ("dim0", "dim1"))
    return moved(call.fields[0], ndim, ndim, lambda d: {first: second, second: first}.get(d, d))


def _select(call: Call) -> Traced:
    removed = normal(call.arguments["dim"], call.arguments["self"].dim())
    return moved(call.fields[0], call.arguments["self"].dim(), call.out.dim(),
                  lambda d: None if d == removed else d - (d > removed))


def _unsqueeze(call: Call) -> Traced:
    added = normal(call.arguments["dim"], call.out.dim())
    return moved(call.fields[0], call.arguments["self"].dim(), call.out.dim(), lambda d: d + (d >= added))


def _squeeze(call: Call) -> Traced:
    shape = call.arguments["self"].shape
    dims = call.arguments.get("dim", call.arguments.get("dims"))
    candidates = range(len(shape)) if dims is None else [normal(d, len(shape)) for d in np.atleast_1d(dims)]
    removed = {d for d in candidates if shape[d] == 1}
    kept = [d for d in range(len(shape)) if d not in removed]
    return moved(call.fields[0], len(shape), call.out.dim(), lambda d: kept.index(d) if d in kept else None)


def _slice(call: Call) -> Field:
    field = call.fields[0]
    ndim = call.arguments["self"].dim()
    dim = normal(call.arguments["dim"], ndim) - ndim
    if field.kind == WHOLE or dim not in field.dims:
        return field
    if field.kind != MAP:
        raise Untraceable("a slice of a flattened map")
    k = field.dims.index(dim)
    start, end, step = call.arguments.get("start"), call.arguments.get("end"), call.arguments.get("step", 1)
    indices = np.arange(len(field.axes[k].lo))[slice(start, end, step)]
    axes = list(field.axes)
    axes[k] = field.axes[k].select(indices, step)
    return Field(MAP, field.dims, (axes[0], axes[1]))


def _along_channels(call: Call) -> Field:
    """Split or concatenate along a dim that is not spatial: the units keep their fields."""
    tensor = call.arguments["tensors"][0] if "tensors" in call.arguments else call.arguments["self"]
    dim = normal(call.arguments.get("dim", 0), tensor.dim()) - tensor.dim()
    if any(dim in field.dims for field in call.fields):
        raise Untraceable("a split or concatenation along a spatial dim")
    return union(call.fields, call.out.shape)


def _batch_norm(call: Call) -> Field:
    training = call.arguments.get("training", False)
    return spread_over_map(call.fields[0]) if training else call.fields[0]


def _layer_norm(call: Call) -> Field:
    field = call.fields[0]
    ndim = call.arguments["input"].dim()
    normalised = set(range(ndim - len(call.arguments["normalized_shape"]), ndim))
    return spread_over_map(field) if {ndim + d for d in field.dims} & normalised else field


def _matrix_product(call: Call) -> Field:
    """A fully connected layer: contracting a flattened map gives WHOLE; one unit per row keeps the rows' fields."""
    data = call.field("mat1" if "mat1" in call.arguments else "self")
    if data.kind == FLAT and data.dims == (-2,):
        return data  # a linear layer applied at every unit (ConvNeXt's channels-last MLP)
    if data.kind == MAP or (data.kind == FLAT and data.dims != (-1,)):
        raise Untraceable("a matrix product over the units of a feature map")
    return whole(union(call.fields, call.out.shape))


def _softmax(call: Call) -> Field:
    field = call.fields[0]
    ndim = call.arguments["self"].dim()
    return spread_over_map(field) if normal(call.arguments["dim"], ndim) - ndim in field.dims else field


def _restrided(call: Call) -> Field:
    """``as_strided`` that keeps the shape only changes the memory layout (kernels use it to return channels-last)."""
    if tuple(call.out.shape) != tuple(call.arguments["self"].shape):
        raise Untraceable("a strided view of another shape")
    return call.fields[0]


def _copy(call: Call) -> Field:
    return call.field("src")


def _same(call: Call) -> Field:
    return call.fields[0]


def pointwise(call: Call) -> Field:
    return union(call.fields, call.out.shape)


RULES: dict[Any, Callable[[Call], Traced]] = {
    aten.convolution: _convolution,
    aten.max_pool2d_with_indices: _max_pool,
    aten.avg_pool2d: _avg_pool,
    aten._adaptive_avg_pool2d: _adaptive_pool,
    aten.adaptive_max_pool2d: _adaptive_pool,
    aten.constant_pad_nd: lambda call: _padded(call, None),
    aten.reflection_pad2d: lambda call: _padded(call, _reflect),
    aten.replication_pad2d: lambda call: _padded(call, lambda positions, size: np.clip(positions, 0, size - 1)),
    aten.mean: _reduce, aten.sum: _reduce, aten.amax: _reduce, aten.amin: _reduce,
    aten.view: _view, aten._unsafe_view: _view, aten.reshape: _view,
    aten.permute: _permute, aten.transpose: _transpose,
    aten.select: _select, aten.unsqueeze: _unsqueeze, aten.squeeze: _squeeze, aten.slice: _slice,
    aten.cat: _along_channels, aten.split: _along_channels, aten.split_with_sizes: _along_channels,
    aten.expand: pointwise,
    # Element-wise operations that ATen does not tag as pointwise.
    aten.hardswish: pointwise, aten.hardswish_: pointwise, aten.gelu_: pointwise, aten.mish_: pointwise,
    aten.prelu: pointwise, aten._prelu_kernel: pointwise, aten.where: pointwise, aten.rsub: pointwise,
    aten._softmax: _softmax,
    aten.native_batch_norm: _batch_norm, aten._native_batch_norm_legit_no_training: _same,
    aten._native_batch_norm_legit: _batch_norm,
    aten.native_layer_norm: _layer_norm, aten.native_group_norm: lambda call: spread_over_map(call.fields[0]),
    aten.addmm: _matrix_product, aten.mm: _matrix_product,
    aten.clone: _same, aten._to_copy: _same, aten.detach: _same, aten.alias: _same, aten.lift_fresh: _same,
    aten.copy_: _copy, aten.copy: _copy, aten.as_strided: _restrided, aten.as_strided_: _restrided,
}
