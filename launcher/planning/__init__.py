"""Planning: model shapes, the memory/time estimator, the GPU and price catalog, offers and the plan.
Imports core and the backend registry (ftlaunch.backends), never one backend."""
