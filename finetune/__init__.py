"""Fine-tuning zoo models on an image folder, in the order a user meets it.

``config`` (one typed run configuration) → ``data`` (scan, split, cache, stream) → ``training`` (``train(config)``)
→ ``results`` (held-out errors, calibration, evaluation) → ``compare`` (architectures side by side) → ``inspection``
(explain a model, clean a data set) → ``shipping`` (export, predict, serve); ``runtime`` is what they share with
the machine.
"""
