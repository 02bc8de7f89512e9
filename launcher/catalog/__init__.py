"""The planner's reference data: GPU specifications (`catalog.gpus`) and dated price tables per target (`catalog.prices`)."""
