"""The SageMaker backend: one CreateTrainingJob per job, data and outputs on S3, logs in CloudWatch."""

from ftlaunch.backends.base import BackendFacts, Capability

FACTS = BackendFacts(
    name="sagemaker", title="Amazon SageMaker", cloud=True, startup_min=(3.0, 8.0),
    settings="ftlaunch.backends.sagemaker.settings",
    unsupported={
        Capability.DOCKER: "SageMaker runs the trainer image from ECR itself; drop --runtime",
    },
    extra="sagemaker", sdk=("boto3",), sdk_label="boto3",
    reads={"s3": "an input channel: SageMaker copies it into /opt/ml/input/data/<channel> before the trainer starts"})
