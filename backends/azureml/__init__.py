"""The Azure ML backend: one command job per job, data and outputs on the workspace's datastore, logs from run history."""
