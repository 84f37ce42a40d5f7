"""Comparing architectures on one data set: the runs (``runner``), their result rows and paired statistics
(``results``), what the data supports saying (``findings``), speed, plots and the written report."""

from finetune.compare.runner import SETTINGS_FILE, Plan, compare, load_comparison, parse_seeds, parse_vary

__all__ = ["SETTINGS_FILE", "Plan", "compare", "load_comparison", "parse_seeds", "parse_vary"]
