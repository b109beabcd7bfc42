"""assetsync's benchmark suite: ``python -m benchmarks run [--quick]`` (see ``__main__``)."""
