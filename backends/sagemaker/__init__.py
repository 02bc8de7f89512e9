"""The SageMaker backend: one CreateTrainingJob per job, data and outputs on S3, logs in CloudWatch."""
