"""Training: a run from its setup and recipe to its checkpoints (``train(config)`` in ``run``)."""
