"""`python -m firesim ...` is the `firesim` command."""

from firesim.cli import main

if __name__ == "__main__":
    main()
