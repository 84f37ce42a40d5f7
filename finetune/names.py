"""Names the command line offers as choices, in a module free of torch so that building the parser stays fast."""

from __future__ import annotations

EXPORT_FORMATS = ("safetensors", "torchscript", "onnx")  # what zoo export writes beside zoo.json
EVALUATION_SPLITS = ("val", "test", "all")  # the parts of a run's saved split that zoo evaluate measures
