"""Models "of your own" for the README's `firerun profile` examples (run them with PYTHONPATH=examples)."""
