"""``gpuq`` sub-commands, one module per area: services, jobs, artifacts."""
