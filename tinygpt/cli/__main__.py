"""`python -m tinygpt.cli ...` runs the `tinygpt` command (the tests and benchmarks start it so)."""
from . import main

main()
