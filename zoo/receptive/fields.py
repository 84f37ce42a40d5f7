"""Receptive fields as data: the input interval of every unit of a tensor, and how fields join."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

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
            raise Untraceable("padding after an adaptive pool with uneven windows")
        return values[inside] + beyond * (self.jump or 0)

    def window(self, starts: np.ndarray, ends: np.ndarray, jump: int | None) -> Axis:
        """The axis of units that each see input units ``starts[o]..ends[o]`` (padding beyond the ends)."""
        # Every position of each window, the window's end repeated to pad the shorter ones (adaptive pooling).
        span = int((ends - starts).max()) + 1
        positions = np.minimum(starts[:, None] + np.arange(span)[None, :], ends[:, None])
        return Axis(self._extend(self.lo, positions).min(axis=1), self._extend(self.hi, positions).max(axis=1), jump)

    def select(self, indices: np.ndarray, step: int = 1) -> Axis:
        """The axis of the units at ``indices``, ``step`` units apart on the padded plane.

        Reflection and replication padding repeat units (step 1): the fields there fold back onto the image,
        but the padded map's units stay evenly spaced, so a later padding extends it by the same spacing.
        """
        return Axis(self.lo[indices], self.hi[indices], None if self.jump is None else self.jump * step)

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


class Untraceable(Exception):
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
    raise Untraceable("feature maps of different sizes joined")


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
        raise Untraceable("feature maps laid out differently joined")
    joined = []
    for k in range(2):
        length = shape[first.dims[k]] if first.kind == MAP else max(len(f.axes[k].lo) for f in spread)
        # A broadcast 1×1 map (a gate of pooled features) adds its interval to every unit, not its spacing.
        jumps = {field.axes[k].jump for field in spread if len(field.axes[k].lo) == length}
        aligned = [_broadcast(field.axes[k], length) for field in spread]
        lo = np.minimum.reduce([axis.lo for axis in aligned] + [np.repeat(f.axes[k].lo, length) for f in wholes])
        hi = np.maximum.reduce([axis.hi for axis in aligned] + [np.repeat(f.axes[k].hi, length) for f in wholes])
        joined.append(Axis(lo, hi, jumps.pop() if len(jumps) == 1 else None))
    return Field(first.kind, first.dims, (joined[0], joined[1]))


def spread_over_map(field: Field) -> Field:
    """Every unit sees every other (statistics over the whole map: group norm, batch norm in training)."""
    if field.kind != MAP:
        return field
    axes = tuple(_broadcast(axis.merged(), len(axis.lo)) for axis in field.axes)
    return Field(MAP, field.dims, (Axis(axes[0].lo, axes[0].hi, field.axes[0].jump),
                                   Axis(axes[1].lo, axes[1].hi, field.axes[1].jump)))


def whole(field: Field) -> Field:
    """Every element sees the union of every unit's interval."""
    height, width = field.axes
    return Field(WHOLE, (), (height.merged(), width.merged()))


# -- re-indexing dims ---------------------------------------------------------------------------------------------

def moved(field: Field, ndim_in: int, ndim_out: int, position: Callable[[int], int | None]) -> Traced:
    """``field`` after its tensor's dims moved: ``position`` maps an input dim to its output dim (None: removed)."""
    if field.kind == WHOLE:
        return field
    moved = [position(ndim_in + dim) for dim in field.dims]
    if None in moved:
        if field.kind == MAP and all(len(axis.lo) == 1 for axis in field.axes):
            return whole(field)  # a 1×1 map squeezed away
        raise Untraceable("a spatial dim selected or removed")
    return Field(field.kind, tuple(dim - ndim_out for dim in moved), field.axes)  # type: ignore[operator]


def normal(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim
