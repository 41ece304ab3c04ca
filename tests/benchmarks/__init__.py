"""Benchmarks (not collected by pytest): run ``python -m tests.benchmarks.run``."""
