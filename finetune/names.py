"""Names the command line offers as choices, in a module free of torch so that building the parser stays fast."""

from __future__ import annotations

EXPORT_FORMATS = ("safetensors", "torchscript", "onnx")  # what zoo export writes beside zoo.json
EVALUATION_SPLITS = ("val", "test", "all")  # the parts of a run's saved split that zoo evaluate measures
TTA_HELP = ("test-time augmentation: none, flip (average over the image and its mirror), flip-crop (and four corner "
            "crops); default: the model's own (the one its run's test error was measured with)")
