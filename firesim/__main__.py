"""`python -m firesim ...` is the `firesim` command."""

from firesim.cli import main

if __name__ == "__main__":  # not when a worker process (multiprocessing, mpi4py.futures) imports the parent's main
    main()
