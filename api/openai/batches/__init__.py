"""The OpenAI Batch API on gpuq's bulk path: a JSONL file of requests becomes one gpuq job per line."""
