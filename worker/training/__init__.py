"""Fine-tune internals: data preparation, the accelerate loop, checkpoints, model cards, DPO."""
