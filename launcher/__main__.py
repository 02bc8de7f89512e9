"""Lets `python -m ftlaunch` behave like the `ftlaunch` command."""

from ftlaunch import cli

if __name__ == "__main__":
    cli.main()
