"""The SkyPilot backend: one managed job per job, on whichever cloud the offer names, outputs in a bucket."""
