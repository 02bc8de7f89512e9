"""The Vertex AI backend: one CustomJob per job, data and outputs on GCS, logs in Cloud Logging."""
