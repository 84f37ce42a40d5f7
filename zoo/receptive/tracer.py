"""The dispatch mode that follows a forward pass operation by operation, giving each tensor its field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from zoo.receptive.fields import Traced, Unknown, Untraceable
from zoo.receptive.rules import RULES, Call, pointwise


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
            if tensor.dim() == outputs[0].dim():  # not the statistics a batch norm also returns
                self.mark(tensor, result)
        return out

    def _propagate(self, func: Any, args: tuple, kwargs: dict, out: Tensor,
                   traced: list[tuple[Traced, Tensor]]) -> Traced:
        unknown = next((field for field, _ in traced if isinstance(field, Unknown)), None)
        if unknown is not None:
            return unknown
        rule = RULES.get(func.overloadpacket)
        if rule is None and torch.Tag.pointwise in func.tags:
            rule = pointwise
        if rule is None:
            return Unknown(f"{func.overloadpacket.__name__}, an operation zoo has no receptive-field rule for")
        try:
            return rule(Call(_arguments(func, args, kwargs), traced, out))  # type: ignore[arg-type]
        except Untraceable as reason:
            return Unknown(f"{reason} ({func.overloadpacket.__name__})")
