"""Benchmarks run by hand (``python -m benchmarks.<name>`` from the repository root), never by the tests."""
