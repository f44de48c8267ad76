"""The same LoRA fine-tune through gpuq (HTTP API -> Redis -> worker) and as a plain script, in one session.

Model: a GPT-2 built from a config (4 layers, 256 wide) with the dev tokenizer; data: prompt/completion rows
written here. Both sides train the same steps with the same hyperparameters and save the adapter; both are
warmed up first (imports and first-call costs paid), then timed ``--repeats`` times, alternating. gpuq's time
is the job's own submitted -> finished span (queue wait, data preparation, model load, training with progress
events and checkpoints, artifact writes); the script's is model load -> adapter saved. Prints the ratio
(script time / gpuq time; 1.0 means no overhead), and the same for CPU seconds (the worker's pool child vs the
script's process), which a busy shared machine disturbs far less than wall time; writes
bench/results/finetune.json.

    python -m bench.finetune [--steps 200] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpuq.common.embedded_redis import EmbeddedRedis
from tests.support.processes import start_api, start_worker, wait_for, worker_alive

KEY = "bench-key-0123456789"
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}


def training(steps: int) -> dict[str, Any]:
    """Hyperparameters shared by both sides."""
    return {"max_steps": steps, "learning_rate": 1e-3, "batch_size": 8, "max_length": 64, "seed": 0,
            "mixed_precision": "no", "log_every": 10, "checkpoint_every": 50}


def build_model(path: Path) -> Path:
    """A GPT-2 big enough that training, not bookkeeping, dominates a step on CPU."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpuq.worker.devmodels._save import save_all, seeded
    from gpuq.worker.devmodels.tokenizing import gpt2_tokenizer

    tokenizer = gpt2_tokenizer(max_length=256)
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=256, n_layer=4, n_head=4,
                        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    with seeded():
        model = GPT2LMHeadModel(config)
    return save_all(path, model, tokenizer)


def write_rows(path: Path, n: int = 400) -> Path:
    """Prompt/completion rows of a few dozen tokens."""
    from gpuq.worker.devmodels.corpus import sentences

    rng = random.Random(0)
    lines = list(sentences())
    rows = [{"prompt": rng.choice(lines), "completion": " " + rng.choice(lines)} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- the direct script: what a user would write with transformers + peft + accelerate ------------------------
def direct_run(model_dir: str, data_file: str, steps: int, out_dir: str) -> tuple[float, float]:
    """One LoRA run without gpuq; returns (wall, CPU) seconds from model load to adapter saved."""
    import torch
    from accelerate import Accelerator
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    t = training(steps)
    start, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(t["seed"])
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(task_type="CAUSAL_LM", **LORA))
    ds = load_dataset("json", data_files=data_file, split="train").shuffle(seed=t["seed"])

    def encode(batch: dict[str, list[str]]) -> dict[str, Any]:
        ids, labels = [], []
        for prompt, completion in zip(batch["prompt"], batch["completion"]):
            head = tok(prompt, add_special_tokens=False)["input_ids"]
            tail = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids.append((head + tail)[:t["max_length"]])
            labels.append(([-100] * len(head) + tail)[:t["max_length"]])
        return {"input_ids": ids, "labels": labels}
    ds = ds.map(encode, batched=True, remove_columns=ds.column_names)

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        pad = [width - len(r["input_ids"]) for r in rows]
        return {"input_ids": torch.tensor([r["input_ids"] + [tok.pad_token_id] * p for r, p in zip(rows, pad)]),
                "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * p for r, p in zip(rows, pad)]),
                "labels": torch.tensor([r["labels"] + [-100] * p for r, p in zip(rows, pad)])}
    acc = Accelerator(cpu=not torch.cuda.is_available())
    loader = DataLoader(ds, batch_size=t["batch_size"], shuffle=True, collate_fn=collate)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t["learning_rate"])
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=steps)
    model, optimizer, loader, scheduler = acc.prepare(model, optimizer, loader, scheduler)
    model.train()
    done = 0
    while done < steps:
        for batch in loader:
            loss = model(**batch).loss
            acc.backward(loss)
            acc.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            done += 1
            if done >= steps:
                break
    acc.unwrap_model(model).save_pretrained(out_dir)
    return time.perf_counter() - start, time.process_time() - cpu


def direct_main(args: argparse.Namespace) -> int:
    """Subprocess entry: a warm-up run, then the timed repeats; prints their seconds as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        direct_run(args.model, args.data, 2, tmp)
        times = [list(direct_run(args.model, args.data, args.steps, tmp)) for _ in range(args.repeats)]
    print(json.dumps(times))
    return 0


# ---- gpuq ----------------------------------------------------------------------------------------------------
def gpuq_run(client: httpx.Client, model: str, file_id: str, steps: int, child: psutil.Process) -> tuple[float, float]:
    """One fine-tune job: (submitted -> finished seconds from the job record, CPU seconds of the worker's pool
    child that ran it)."""
    before = sum(child.cpu_times()[:2])
    body = {"kind": "finetune", "model": model,
            "params": {"data": {"file_id": file_id, "test_size": 0}, "lora": LORA, "training": training(steps)}}
    job = client.post("/v1/jobs", json=body).json()
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    t = job["timings"]
    return float(t["finished_at"] - t["submitted_at"]), sum(child.cpu_times()[:2]) - before


def direct_times(env: dict[str, str], model: Path, data: Path, steps: int, repeats: int) -> list[list[float]]:
    """Run the direct script in its own process (same environment as the worker)."""
    out = subprocess.run([sys.executable, "-m", "bench.finetune", "--direct", "--model", str(model), "--data",
                          str(data), "--steps", str(steps), "--repeats", str(repeats)],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return [[float(x) for x in pair] for pair in json.loads(out.stdout.strip().splitlines()[-1])]


def main(argv: list[str] | None = None) -> int:
    """Run both sides and print the ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads on both sides (on a shared CPU, more threads than free cores "
                             "makes OpenMP spin and every step many times slower)")
    parser.add_argument("--direct", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.direct:
        return direct_main(args)
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-ft-"))
    model, data = build_model(tmp / "models" / "gpt2-bench"), write_rows(tmp / "rows.jsonl")
    redis = EmbeddedRedis(tmp / "redis").start()
    env = {**os.environ, "GPUQ_REDIS_URL": redis.url, "GPUQ_API_KEYS": f"bench:{KEY}", "GPUQ_DATA_DIR": str(tmp),
           "GPUQ_ARTIFACT_DIR": str(tmp / "artifacts"), "GPUQ_MODEL_ROOTS": str(tmp / "models"),
           "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf"), "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(args.threads)}
    gpuq_s: list[list[float]] = []
    direct_s: list[list[float]] = []
    try:
        worker = start_worker(env, tmp, "bench-ft")
        wait_for(lambda: worker_alive(redis.url, "bench-ft@"), 120, "worker")
        api, url = start_api(env, tmp)
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
                with data.open("rb") as fh:
                    file_id = client.post("/v1/files", files={"file": ("rows.jsonl", fh)}).json()["id"]
                child = psutil.Process(worker.pid).children()[0]  # the prefork pool child that runs jobs
                gpuq_run(client, str(model), file_id, 2, child)  # warm-up: imports, first-call costs
                for _ in range(args.repeats):  # alternate, so load from other processes hits both sides alike
                    direct_s += direct_times(env, model, data, args.steps, 1)
                    gpuq_s.append(list(gpuq_run(client, str(model), file_id, args.steps, child)))
        finally:
            api.stop()
            worker.stop()
    finally:
        redis.stop()
    report({"steps": args.steps, "repeats": args.repeats, "threads": args.threads,
            "gpuq_wall_s": [w for w, _ in gpuq_s], "direct_wall_s": [w for w, _ in direct_s],
            "gpuq_cpu_s": [c for _, c in gpuq_s], "direct_cpu_s": [c for _, c in direct_s]})
    return 0


def report(out: dict[str, Any]) -> None:
    """Print the comparison and write the JSON summary."""
    for side in ("gpuq", "direct"):
        for what in ("wall", "cpu"):
            out[f"{side}_{what}_median_s"] = statistics.median(out[f"{side}_{what}_s"])
    out["ratio_direct_over_gpuq"] = out["direct_wall_median_s"] / out["gpuq_wall_median_s"]
    out["ratio_direct_over_gpuq_min"] = min(out["direct_wall_s"]) / min(out["gpuq_wall_s"])
    out["cpu_ratio_direct_over_gpuq"] = out["direct_cpu_median_s"] / out["gpuq_cpu_median_s"]
    print(f"\nLoRA fine-tune, GPT-2 4x256, {out['steps']} steps, {out['repeats']} runs each, "
          f"{out['threads']} torch thread(s)")
    for side, label in (("direct", "direct script"), ("gpuq", "through gpuq")):
        walls = [round(x, 2) for x in out[f"{side}_wall_s"]]
        print(f"  {label:<14} wall median {out[f'{side}_wall_median_s']:7.2f} s {walls}   "
              f"CPU median {out[f'{side}_cpu_median_s']:7.2f} s")
    print(f"  ratio direct / gpuq: wall median {out['ratio_direct_over_gpuq']:.3f} (target >= 0.95), "
          f"wall best {out['ratio_direct_over_gpuq_min']:.3f}, CPU {out['cpu_ratio_direct_over_gpuq']:.3f}")
    path = ROOT / "bench" / "results" / "finetune.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"  summary -> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
