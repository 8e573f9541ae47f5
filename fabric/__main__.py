"""`python -m fabric` runs the command line."""

from fabric.cli import main

main()
