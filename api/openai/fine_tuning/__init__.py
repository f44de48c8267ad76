"""OpenAI fine-tuning jobs on gpuq's ``finetune`` kind (LoRA); the finished adapter is served as an ``ft:`` model."""
