"""The model zoo (PyTorch) and its profiler; the profiles it writes are read by ``firesim.workload``.

- `models.zoo` (torch): the PyTorch definitions and the registry, `build(name)`, `list_models()`.
- `models.profiling` (torch): `profile(model, input_shape)`; `python -m models.profiling --write` writes
  `firesim/data/profiles/*.json`.

Dependencies point one way: `models` imports `firesim`, never the reverse.
"""
