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

from zoo.receptive.fields import Field, Unknown, image_field
from zoo.receptive.tracer import FieldTracer

__all__ = ["Field", "FieldTracer", "Unknown", "image_field"]
