"""imagegate's benchmark harness: `python bench/run.py` (see BENCHMARKS.md)."""
