"""The cluster simulator behind `ceems demo`, tests and benchmarks."""
