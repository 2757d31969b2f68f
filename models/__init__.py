"""The model zoo and its saved profiles.

- `models.catalog` (torch-free): `load_profile(name)`, `list_profiles()` read `models/profiles/*.json`.
- `models.zoo` (torch): the PyTorch definitions and the registry, `build(name)`, `list_models()`.
- `models.profiling` (torch): `profile(model, input_shape)`; `python -m models.profiling --write`.

This package imports nothing itself, so `import models.catalog` never loads torch.
"""
