"""The SkyPilot backend: one managed job per job, on whichever cloud the offer names, outputs in a bucket."""

from ftlaunch.backends.base import BackendFacts, Capability

FACTS = BackendFacts(
    name="skypilot", title="SkyPilot", cloud=True, startup_min=(3.0, 8.0),
    settings="ftlaunch.backends.skypilot.settings",
    unsupported={
        Capability.DOCKER: "SkyPilot runs the trainer image on the cluster itself (image_id: docker:...); "
                           "drop --runtime",
    },
    extra="skypilot", sdk=("sky",), sdk_label="skypilot",
    reads={scheme: "a SkyPilot file mount: the bucket's file or folder copied onto the node"
           for scheme in ("s3", "gs", "r2", "cos", "oci")})
