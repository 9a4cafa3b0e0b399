"""Models built in code for edgec's tests and benchmarks (nothing is downloaded)."""
