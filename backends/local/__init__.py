"""The local backend: runs the trainer on this machine, as a process (or in Docker)."""

from ftlaunch.backends.base import BackendFacts, Capability

FACTS = BackendFacts(
    name="local", title="this machine", cloud=False, startup_min=(0.2, 1.0),
    settings="ftlaunch.backends.local.settings",
    unsupported={
        Capability.MULTI_NODE: "this machine is one node; use --cloud skypilot or a managed cloud for --nodes > 1",
        Capability.SPOT: "spot capacity is a cloud offer; drop --spot or pick a cloud",
        Capability.REGION: "this machine has no region; drop --region",
    },
    extra="train", sdk=("torch", "transformers", "peft", "trl"),
    sdk_label="training packages (torch, transformers, peft, trl)")
