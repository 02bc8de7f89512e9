"""ftlaunch: one fine-tuning spec -> a job on any cloud, with its memory, time and cost known first."""

__version__ = "0.1.0"
