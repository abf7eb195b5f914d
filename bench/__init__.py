"""entra-sync benchmarks: ``python -m bench [--quick]`` writes BENCHMARKS.md (see bench/run.py)."""
