"""Entry point of the trainer inside every job."""

import sys

from ftlaunch.containers.trainer import run

if __name__ == "__main__":
    sys.exit(run.main())
