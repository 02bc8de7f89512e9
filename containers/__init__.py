"""What goes into the job image: the Dockerfile logic and the trainer, the only code that runs inside a job."""
