"""The local backend: runs the trainer on this machine, as a process (or in Docker)."""
