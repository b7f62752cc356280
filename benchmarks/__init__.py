"""arenagrad's benchmark suite: run it with ``python benchmarks/run.py`` (see benchmarks/README.md)."""
