"""Benchmarks: each prints one JSON summary line (see bench/__main__.py)."""
