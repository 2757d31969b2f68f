"""Searching many configurations: ``firesim paper`` (the FireCaffe reproduction), ``firesim sweep`` (a grid
to a file) and ``firesim recommend`` (what to buy under a deadline and a budget), all over a
``concurrent.futures`` executor (``firesim.search.executor``: local processes, MPI, or any executor)."""

from firesim.search.executor import make_executor, map_chunked
from firesim.search.sweep import Case, Setting, evaluate, grid, search_space, sweep

__all__ = ["Case", "Setting", "evaluate", "grid", "make_executor", "map_chunked", "search_space", "sweep"]
