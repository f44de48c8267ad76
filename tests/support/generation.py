"""Models and helpers for the continuous-batching tests: LoRA adapters and a wide GPT-2 for the KV budget."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.support.jobs import wait_status

# 2 MiB of KV cache per model: 4096 positions of the tiny GPT-2 (512 bytes each), 256 of ``wide_gpt2``'s.
KV_BUDGET = "2MiB"


def lora(base: Path, out: Path, seed: int) -> Path:
    """A random LoRA adapter on ``base``'s attention (large enough to change what it generates)."""
    if (out / "adapter_config.json").is_file():
        return out
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True,
                                                init_lora_weights=False))
    peft.save_pretrained(str(out))
    return out


def wide_gpt2(tokenizer_from: Path, out: Path) -> Path:
    """A 4-layer, 256-wide GPT-2 (8 KiB of keys and values per position) with the tiny one's tokenizer."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    config = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=256, n_layer=4, n_head=4,
                        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        GPT2LMHeadModel(config).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    shutil.copy(tokenizer_from / "generation_config.json", out / "generation_config.json")
    return out


def gen(model: str, inputs: Any, task: str = "text-generation", **params: Any) -> dict[str, Any]:
    """A generation job's body."""
    return {"kind": "inference", "model": model, "inputs": inputs, "params": {"task": task, **params}}


def run_all(client: httpx.Client, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit every body at once and return the final records, in order."""
    def one(body: dict[str, Any]) -> dict[str, Any]:
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == 202, resp.text
        return wait_status(client, resp.json()["id"])
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def run_group(client: httpx.Client, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit the bodies as one bulk request (one group message: the worker starts them all before waiting for
    any) and return the final records, in order."""
    resp = client.post("/v1/jobs/batch", json={"jobs": bodies})
    assert resp.status_code == 202, resp.text
    return [wait_status(client, j["id"]) for j in resp.json()["jobs"]]


def events(client: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The job's events so far, as (type, data)."""
    import json

    text = client.get(f"/v1/jobs/{job_id}/events", params={"follow": "false"}).text
    out, kind = [], ""
    for line in text.splitlines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            out.append((kind, json.loads(line[6:])))
    return out


def texts(result: Any) -> list[str]:
    """The generated texts of a result (one input or a list)."""
    return [r["generated_text"] for r in (result if isinstance(result, list) else [result])]
