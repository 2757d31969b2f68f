"""`python -m firerun ...` is the `firerun` command (the launcher starts ranks this way)."""

from firerun.cli import main

main()
