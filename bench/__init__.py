"""Benchmarks (`make bench`): each module here has a `main()` that prints its own table of measured figures."""
