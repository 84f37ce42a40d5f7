"""Receptive fields traced through the operations a network really runs (Araujo et al., Distill 2019).

Every tensor computed from the image carries, for each unit along each spatial axis, the interval of input
pixels ``[lo, hi]`` that can influence it. A windowed operation (convolution, pooling, padding) gives output
unit ``o`` the union of the intervals of the input units its window covers, which is Araujo's recurrence
``r_out = r_in + (k - 1)·d·j_in``, ``j_out = j_in·s`` applied unit by unit; operations that join paths
(residual sums, concatenation, gating by pooled features) take the union per unit, so a unit's field is the
largest over every path through branches and skip connections. As in the paper, intervals are measured on the
padded plane (padding extends an axis by its spacing), so a field can be wider than the image.

Tracing happens at the level of ATen operations, below modules, so functional code (``out += identity``,
``torch.cat``, timm's dynamic "same" padding) is followed like any layer. An operation zoo has no rule for
makes every tensor computed from it ``Unknown``, with the operation's name: never a guessed number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

MAP = "map"  # a feature map: ``dims`` are the tensor dims of its height and width
FLAT = "flat"  # a feature map flattened into one tensor dim (``dims``), element by element
WHOLE = "whole"  # every element depends on the union of the intervals (after a fully connected layer or a global pool)


@dataclass(frozen=True)
class Axis:
    """The input interval ``[lo[i], hi[i]]`` of each unit along one spatial axis.

    ``jump`` is the spacing of the units in input pixels, used to extend the axis into padding; ``None`` when the
    units are not evenly spaced (after an adaptive pool that does not divide the map), where no padding can be
    placed without guessing.
    """

    lo: np.ndarray
    hi: np.ndarray
    jump: int | None

    @classmethod
    def pixels(cls, size: int) -> Axis:
        """The image itself: pixel ``i`` sees pixel ``i``."""
        return cls(np.arange(size), np.arange(size), 1)

    def _extend(self, values: np.ndarray, indices: np.ndarray) -> np.ndarray:
        inside = np.clip(indices, 0, len(values) - 1)
        beyond = indices - inside  # units of padding before (negative) or after (positive) the axis
        if np.any(beyond) and self.jump is None:
            raise _Untraceable("padding after an adaptive pool with uneven windows")
        return values[inside] + beyond * (self.jump or 0)

    def window(self, starts: np.ndarray, ends: np.ndarray, jump: int | None) -> Axis:
        """The axis of units that each see input units ``starts[o]..ends[o]`` (padding beyond the ends)."""
        # Every rule keeps lo and hi non-decreasing along the axis, so a window's union spans its end units.
        return Axis(self._extend(self.lo, starts), self._extend(self.hi, ends), jump)

    def select(self, indices: np.ndarray) -> Axis:
        """The axis of the units at ``indices`` (which may repeat, as reflection padding does)."""
        spacing = np.diff(self.lo[indices])
        jump = int(spacing[0]) if len(spacing) and np.all(spacing == spacing[0]) and spacing[0] > 0 else None
        return Axis(self.lo[indices], self.hi[indices], jump if len(indices) > 1 else self.jump)

    def merged(self) -> Axis:
        """One unit that sees the union of every unit's interval."""
        return Axis(self.lo.min(keepdims=True), self.hi.max(keepdims=True), None)

    @property
    def size(self) -> int:
        """The widest interval, in pixels."""
        return int((self.hi - self.lo).max()) + 1


@dataclass(frozen=True)
class Field:
    """What the input pixels of each element of a tensor are: see MAP, FLAT and WHOLE (``dims`` count from the end)."""

    kind: str
    dims: tuple[int, ...]
    axes: tuple[Axis, Axis]

    @property
    def size(self) -> tuple[int, int]:
        """The receptive field (height, width) in pixels: the largest over the elements."""
        height, width = self.axes
        return height.size, width.size


@dataclass(frozen=True)
class Unknown:
    """A tensor computed through an operation zoo cannot reason about."""

    reason: str


Traced = Field | Unknown


class _Untraceable(Exception):
    """Raised by a rule that meets a case it cannot follow exactly; the tensor becomes ``Unknown``."""


def image_field(height: int, width: int) -> Field:
    """The field of an ``N×C×H×W`` input image."""
    return Field(MAP, (-2, -1), (Axis.pixels(height), Axis.pixels(width)))


# -- joining fields ----------------------------------------------------------------------------------------------

def _broadcast(axis: Axis, length: int) -> Axis:
    if len(axis.lo) == length:
        return axis
    if len(axis.lo) == 1:
        return Axis(np.repeat(axis.lo, length), np.repeat(axis.hi, length), axis.jump)
    raise _Untraceable("feature maps of different sizes joined")


def union(fields: Sequence[Field], shape: Sequence[int]) -> Field:
    """The field of an element-wise join of ``fields`` (broadcast to ``shape``): per unit, the union of intervals."""
    spread = [field for field in fields if field.kind != WHOLE]
    wholes = [field for field in fields if field.kind == WHOLE]
    if not spread:
        height, width = (Axis(np.minimum.reduce([f.axes[k].lo for f in wholes]),
                              np.maximum.reduce([f.axes[k].hi for f in wholes]), None) for k in range(2))
        return Field(WHOLE, (), (height, width))
    first = spread[0]
    if any(field.kind != first.kind or field.dims != first.dims for field in spread):
        raise _Untraceable("feature maps laid out differently joined")
    joined = []
    for k in range(2):
        length = shape[first.dims[k]] if first.kind == MAP else max(len(f.axes[k].lo) for f in spread)
        # A broadcast 1×1 map (a gate of pooled features) adds its interval to every unit, not its spacing.
        jumps = {field.axes[k].jump for field in spread if len(field.axes[k].lo) == length}
        broadcast = [_broadcast(field.axes[k], length) for field in spread]
        lo = np.minimum.reduce([axis.lo for axis in broadcast] + [np.repeat(f.axes[k].lo, length) for f in wholes])
        hi = np.maximum.reduce([axis.hi for axis in broadcast] + [np.repeat(f.axes[k].hi, length) for f in wholes])
        joined.append(Axis(lo, hi, jumps.pop() if len(jumps) == 1 else None))
    return Field(first.kind, first.dims, (joined[0], joined[1]))


def _spread_over_map(field: Field) -> Field:
    """Every unit sees every other (statistics over the whole map: group norm, batch norm in training)."""
    if field.kind != MAP:
        return field
    axes = tuple(_broadcast(axis.merged(), len(axis.lo)) for axis in field.axes)
    return Field(MAP, field.dims, (Axis(axes[0].lo, axes[0].hi, field.axes[0].jump),
                                   Axis(axes[1].lo, axes[1].hi, field.axes[1].jump)))


def _whole(field: Field) -> Field:
    height, width = field.axes
    return Field(WHOLE, (), (height.merged(), width.merged()))


# -- re-indexing dims ---------------------------------------------------------------------------------------------

def _moved(field: Field, ndim_in: int, ndim_out: int, position: Callable[[int], int | None]) -> Traced:
    """``field`` after its tensor's dims moved: ``position`` maps an input dim to its output dim (None: removed)."""
    if field.kind == WHOLE:
        return field
    moved = [position(ndim_in + dim) for dim in field.dims]
    if None in moved:
        if field.kind == MAP and all(len(axis.lo) == 1 for axis in field.axes):
            return _whole(field)  # a 1×1 map squeezed away
        raise _Untraceable("a spatial dim selected or removed")
    return Field(field.kind, tuple(dim - ndim_out for dim in moved), field.axes)  # type: ignore[operator]


def _normal(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


# -- the rules, by ATen operation ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Call:
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
        raise _Untraceable(f"its {name} is not computed from the image")


def _nchw(field: Field) -> Field:
    if field.kind != MAP or field.dims != (-2, -1):
        raise _Untraceable("a window over a tensor that is not laid out N×C×H×W")
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


def _convolution(call: _Call) -> Field:
    a = call.arguments
    if a["transposed"]:
        raise _Untraceable("a transposed convolution")
    kernel = a["weight"].shape[-2:]
    return _sliding(call.field("input"), call.out, kernel, a["stride"], a["padding"], a["dilation"])


def _max_pool(call: _Call) -> Field:
    a = call.arguments
    kernel = _pairs(a["kernel_size"], ())
    return _sliding(call.field("self"), call.out, kernel, _pairs(a["stride"], kernel), _pairs(a["padding"], (0,)),
                    _pairs(a["dilation"], (1,)))


def _avg_pool(call: _Call) -> Field:
    a = call.arguments
    kernel = _pairs(a["kernel_size"], ())
    return _sliding(call.field("self"), call.out, kernel, _pairs(a["stride"], kernel), _pairs(a["padding"], (0,)),
                    (1, 1))


def _adaptive_pool(call: _Call) -> Field:
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


def _padded(call: _Call, index: Callable[[np.ndarray, int], np.ndarray] | None) -> Field:
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


def _reduce(call: _Call) -> Field:
    field = call.fields[0]
    ndim = call.arguments["self"].dim()
    dims = call.arguments.get("dim")
    reduced = set(range(ndim)) if dims in (None, []) else {_normal(d, ndim) for d in dims}
    keep = bool(call.arguments.get("keepdim", False))
    spatial = {ndim + dim for dim in field.dims}
    if field.kind == WHOLE or not reduced & spatial:
        kept = [d for d in range(ndim) if keep or d not in reduced]
        return _moved(field, ndim, call.out.dim(), lambda d: kept.index(d) if d in kept else None)  # type: ignore[return-value]
    if not spatial <= reduced:
        raise _Untraceable("a reduction over one spatial dim")
    if field.kind == MAP and keep:
        return Field(MAP, field.dims, tuple(Axis(a.lo.min(keepdims=True), a.hi.max(keepdims=True),  # type: ignore[arg-type]
                                                 None if a.jump is None else a.jump * len(a.lo)) for a in field.axes))
    return _whole(field)


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


def _view(call: _Call) -> Traced:
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
        if left[-len(spatial):] != spatial:
            break  # a dim after the map's units is merged with them: they no longer stay whole
        if len(right) == 1:
            return Field(FLAT, (right[0] - len(after),), field.axes)
        if tuple(after[d] for d in right[-2:]) == sizes:
            return Field(MAP, (right[-2] - len(after), right[-1] - len(after)), field.axes)
        break
    raise _Untraceable("a reshape that splits or mixes the units of a map")


def _permute(call: _Call) -> Traced:
    order = [_normal(d, call.out.dim()) for d in call.arguments["dims"]]
    return _moved(call.fields[0], call.out.dim(), call.out.dim(), order.index)


def _transpose(call: _Call) -> Traced:
    ndim = call.out.dim()
    first, second = (_normal(call.arguments[name], ndim) for name in ("dim0", "dim1"))
    return _moved(call.fields[0], ndim, ndim, lambda d: {first: second, second: first}.get(d, d))


def _select(call: _Call) -> Traced:
    removed = _normal(call.arguments["dim"], call.arguments["self"].dim())
    return _moved(call.fields[0], call.arguments["self"].dim(), call.out.dim(),
                  lambda d: None if d == removed else d - (d > removed))


def _unsqueeze(call: _Call) -> Traced:
    added = _normal(call.arguments["dim"], call.out.dim())
    return _moved(call.fields[0], call.arguments["self"].dim(), call.out.dim(), lambda d: d + (d >= added))


def _squeeze(call: _Call) -> Traced:
    shape = call.arguments["self"].shape
    dims = call.arguments.get("dim", call.arguments.get("dims"))
    candidates = range(len(shape)) if dims is None else [_normal(d, len(shape)) for d in np.atleast_1d(dims)]
    removed = {d for d in candidates if shape[d] == 1}
    kept = [d for d in range(len(shape)) if d not in removed]
    return _moved(call.fields[0], len(shape), call.out.dim(), lambda d: kept.index(d) if d in kept else None)


def _slice(call: _Call) -> Field:
    field = call.fields[0]
    ndim = call.arguments["self"].dim()
    dim = _normal(call.arguments["dim"], ndim) - ndim
    if field.kind == WHOLE or dim not in field.dims:
        return field
    if field.kind != MAP:
        raise _Untraceable("a slice of a flattened map")
    k = field.dims.index(dim)
    start, end, step = (call.arguments.get(name) for name in ("start", "end", "step"))
    indices = np.arange(len(field.axes[k].lo))[slice(start, end, step)]
    axes = list(field.axes)
    axes[k] = field.axes[k].select(indices)
    return Field(MAP, field.dims, (axes[0], axes[1]))


def _along_channels(call: _Call) -> Field:
    """Split or concatenate along a dim that is not spatial: the units keep their fields."""
    tensor = call.arguments["tensors"][0] if "tensors" in call.arguments else call.arguments["self"]
    dim = _normal(call.arguments.get("dim", 0), tensor.dim()) - tensor.dim()
    if any(dim in field.dims for field in call.fields):
        raise _Untraceable("a split or concatenation along a spatial dim")
    return union(call.fields, call.out.shape)


def _batch_norm(call: _Call) -> Field:
    training = call.arguments.get("training", False)
    return _spread_over_map(call.fields[0]) if training else call.fields[0]


def _layer_norm(call: _Call) -> Field:
    field = call.fields[0]
    ndim = call.arguments["input"].dim()
    normalised = set(range(ndim - len(call.arguments["normalized_shape"]), ndim))
    return _spread_over_map(field) if {ndim + d for d in field.dims} & normalised else field


def _matrix_product(call: _Call) -> Field:
    """A fully connected layer: contracting a flattened map gives WHOLE; one unit per row keeps the rows' fields."""
    data = call.field("mat1" if "mat1" in call.arguments else "self")
    if data.kind == FLAT and data.dims == (-2,):
        return data  # a linear layer applied at every unit (ConvNeXt's channels-last MLP)
    if data.kind == MAP or (data.kind == FLAT and data.dims != (-1,)):
        raise _Untraceable("a matrix product over the units of a feature map")
    return _whole(union(call.fields, call.out.shape))


def _softmax(call: _Call) -> Field:
    field = call.fields[0]
    ndim = call.arguments["self"].dim()
    return _spread_over_map(field) if _normal(call.arguments["dim"], ndim) - ndim in field.dims else field


def _restrided(call: _Call) -> Field:
    """``as_strided`` that keeps the shape only changes the memory layout (kernels use it to return channels-last)."""
    if tuple(call.out.shape) != tuple(call.arguments["self"].shape):
        raise _Untraceable("a strided view of another shape")
    return call.fields[0]


def _copy(call: _Call) -> Field:
    return call.field("src")


def _same(call: _Call) -> Field:
    return call.fields[0]


def _pointwise(call: _Call) -> Field:
    return union(call.fields, call.out.shape)


RULES: dict[Any, Callable[[_Call], Traced]] = {
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
    aten.expand: _pointwise,
    # Element-wise operations that ATen does not tag as pointwise.
    aten.hardswish: _pointwise, aten.hardswish_: _pointwise, aten.gelu_: _pointwise, aten.mish_: _pointwise,
    aten.prelu: _pointwise, aten._prelu_kernel: _pointwise, aten.where: _pointwise, aten.rsub: _pointwise,
    aten._softmax: _softmax,
    aten.native_batch_norm: _batch_norm, aten._native_batch_norm_legit_no_training: _same,
    aten._native_batch_norm_legit: _batch_norm,
    aten.native_layer_norm: _layer_norm, aten.native_group_norm: lambda call: _spread_over_map(call.fields[0]),
    aten.addmm: _matrix_product, aten.mm: _matrix_product,
    aten.clone: _same, aten._to_copy: _same, aten.detach: _same, aten.alias: _same, aten.lift_fresh: _same,
    aten.copy_: _copy, aten.copy: _copy, aten.as_strided: _restrided, aten.as_strided_: _restrided,
}


def _arguments(func: Any, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The operation's arguments by their schema names, defaults filled in."""
    named = {}
    for index, argument in enumerate(func._schema.arguments):
        if index < len(args) and not argument.kwarg_only:
            named[argument.name] = args[index]
        elif argument.name in kwargs:
            named[argument.name] = kwargs[argument.name]
        elif argument.has_default_value():
            named[argument.name] = argument.default_value
    return named


class FieldTracer(TorchDispatchMode):
    """Follows every operation of a forward pass, giving each tensor computed from the image its field.

    ``on_operation(func, args, kwargs, out)`` is called after each operation (for counting FLOPs). Tensors are
    held until the tracer is dropped, so their ids stay unique: use it for one forward pass at a small input
    or on the meta device.
    """

    def __init__(self, on_operation: Callable[[Any, tuple, dict, Any], None] | None = None) -> None:
        super().__init__()
        self._fields: dict[int, tuple[Tensor, Traced]] = {}
        self._on_operation = on_operation

    def mark(self, tensor: Tensor, field: Traced) -> None:
        self._fields[id(tensor)] = (tensor, field)

    def field(self, tensor: Tensor) -> Traced | None:
        """The field of ``tensor``, or None when it was not computed from the image (a weight, a constant)."""
        entry = self._fields.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._on_operation is not None:
            self._on_operation(func, args, kwargs, out)
        inputs = [(tensor, self.field(tensor)) for tensor in tree_flatten((args, kwargs))[0]
                  if isinstance(tensor, Tensor)]
        traced = [(field, tensor) for tensor, field in inputs if field is not None]
        if not traced:
            return out
        outputs = [tensor for tensor in tree_flatten(out)[0] if isinstance(tensor, Tensor)]
        if not outputs:
            return out
        result = self._propagate(func, args, kwargs, outputs[0], traced)
        for tensor in outputs:
            if tensor.dim() == outputs[0].dim():  # not the saved statistics of a batch norm, nor max-pool indices' kin
                self.mark(tensor, result)
        return out

    def _propagate(self, func: Any, args: tuple, kwargs: dict, out: Tensor,
                   traced: list[tuple[Traced, Tensor]]) -> Traced:
        unknown = next((field for field, _ in traced if isinstance(field, Unknown)), None)
        if unknown is not None:
            return unknown
        rule = RULES.get(func.overloadpacket)
        if rule is None and torch.Tag.pointwise in func.tags:
            rule = _pointwise
        if rule is None:
            return Unknown(f"{func.overloadpacket.__name__}, an operation zoo has no receptive-field rule for")
        try:
            return rule(_Call(_arguments(func, args, kwargs), traced, out))  # type: ignore[arg-type]
        except _Untraceable as reason:
            return Unknown(f"{reason} ({func.overloadpacket.__name__})")
