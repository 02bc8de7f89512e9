"""The Vertex AI backend: one CustomJob per job, data and outputs on GCS, logs in Cloud Logging."""

from ftlaunch.backends.base import BackendFacts, Capability

FACTS = BackendFacts(
    name="vertex", title="Google Vertex AI", cloud=True, startup_min=(4.0, 10.0),
    settings="ftlaunch.backends.vertex.settings",
    unsupported={
        Capability.DOCKER: "Vertex AI runs the trainer image from Artifact Registry itself; drop --runtime",
    },
    extra="vertex", sdk=("google.cloud.aiplatform_v1", "google.cloud.storage"),
    sdk_label="google-cloud-aiplatform and google-cloud-storage",
    reads={"gs": "the job's Cloud Storage FUSE mount: /gcs/<bucket>/<path>"})
