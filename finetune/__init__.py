"""Fine-tuning zoo models on an image folder: data, Lightning module, runs, export and reports."""
