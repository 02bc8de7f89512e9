"""The Azure ML backend: one command job per job, data and outputs on the workspace's datastore, logs from run history."""

from ftlaunch.backends.base import BackendFacts, Capability

FACTS = BackendFacts(
    name="azureml", title="Azure Machine Learning", cloud=True, startup_min=(4.0, 12.0),
    settings="ftlaunch.backends.azureml.settings",
    unsupported={
        Capability.DOCKER: "Azure ML runs the trainer image from the registry itself; drop --runtime",
        Capability.REGION: "an Azure ML job runs in its workspace's region; drop --region and point "
                           "FTLAUNCH_AZURE_WORKSPACE at a workspace in the region you want",
    },
    extra="azure", sdk=("azure.ai.ml", "azure.identity", "azure.storage.blob"),
    sdk_label="azure-ai-ml, azure-identity and azure-storage-blob",
    reads={"azureml": "a job input (uri_file or uri_folder) mounted from the datastore"})
