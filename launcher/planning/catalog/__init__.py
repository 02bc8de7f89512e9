"""The planner's reference data: dated price tables per target (`catalog.prices`); GPU specifications are in core (`ftlaunch.core.gpus`)."""
