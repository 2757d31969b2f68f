from firesim.cli import main

main()
