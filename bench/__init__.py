"""Benchmarks: each figure of the pipeline beside its ceiling. Run ``python -m bench.run``."""
