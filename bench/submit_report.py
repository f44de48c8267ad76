"""The table bench/submit.py prints: each target's figure beside its baseline from the same run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _evalsha(row: dict[str, Any]) -> float:
    return float(row["redis_commands_per_submit"].get("evalsha", 0.0))


def report(out: dict[str, Any], path: Path) -> None:
    """Print every figure, baseline and ratio; write the JSON summary to ``path``."""
    print(f"\n{out['cpus']} CPUs, load average {out['load_avg_at_start']:.1f} -> {out['load_avg_at_end']:.1f}, "
          f"task events {out['task_events']}")
    rows: list[tuple[str, str, str, str, str]] = []
    if "submit" in out:
        s = out["submit"]
        for job in ("noop", "embedding"):
            new, old = s[f"one_trip_{job}"], s[f"celery_publish_{job}"]
            rows.append((f"{job}: accepted single submits/s, {out['connections']} conns",
                         f"{new['accepted_per_s']:.0f}", f"{old['accepted_per_s']:.0f}",
                         f"{new['accepted_per_s'] / old['accepted_per_s']:.2f}x", ">= 1,000/s"))
            rows.append((f"{job}: API CPU ms per submit", f"{new['api_cpu_ms']:.2f}", f"{old['api_cpu_ms']:.2f}",
                         f"{new['api_cpu_ms'] / old['api_cpu_ms']:.2f}x", "<= 1.0 ms"))
            rows.append((f"{job}: Redis / load generator CPU ms per submit",
                         f"{new['redis_cpu_ms']:.2f} / {new['client_cpu_ms']:.2f}",
                         f"{old['redis_cpu_ms']:.2f} / {old['client_cpu_ms']:.2f}", "", ""))
            rows.append((f"{job}: Redis commands per submit (EVALSHA calls)",
                         f"{new['redis_calls_per_submit']:.1f} ({_evalsha(new):.2f})",
                         f"{old['redis_calls_per_submit']:.1f} ({_evalsha(old):.2f})", "", ""))
    if "framework" in out:
        f = out["framework"]
        g, b = f["gpuq_cpu_ms"], f["bare_cpu_ms"]
        rows.append(("no-op job CPU ms: gpuq API+worker+Redis / bare client+worker+Redis",
                     f"{f['gpuq_cpu_ms_total']:.2f}", f"{f['bare_cpu_ms_total']:.2f}",
                     f"{f['ratio_cpu_gpuq_vs_bare']:.2f}x", "<= 2x"))
        rows.append(("  of which API / worker / Redis (bare: client / worker / Redis)",
                     f"{g['api']:.2f} / {g['worker']:.2f} / {g['redis']:.2f}",
                     f"{b['client']:.2f} / {b['worker']:.2f} / {b['redis']:.2f}", "", "worker <= 1.5 ms"))
        rows.append(("no-op jobs/s (64 in flight / delay() x N)", f"{f['gpuq_noop_jobs_per_s']:.0f}",
                     f"{f['bare_noop_jobs_per_s']:.0f}", "", ""))
        rows.append(("Redis commands per no-op job", f"{sum(f['gpuq_redis_commands_per_job'].values()):.1f}",
                     f"{sum(f['bare_redis_commands_per_job'].values()):.1f}", "", ""))
    if "roundtrip" in out:
        t = out["roundtrip"]
        rows.append(("no-op round trip p50 ms (Prefer: wait / delay().get())", f"{t['p50_ms_gpuq']:.1f}",
                     f"{t['p50_ms_bare']:.1f}", f"{t['p50_ms_over_bare']:+.1f} ms", "<= bare + 5 ms"))
    if "inference" in out:
        i = out["inference"]
        rows.append(("all-MiniLM-L6-v2, one job per request / direct batched, jobs/s", f"{i['gpuq_http']:.1f}",
                     f"{i['direct_batched']:.1f}", f"{i['ratio']:.2f}x", ">= 0.7x (0.8x)"))
    if "scaling" in out:
        c = out["scaling"]
        rows.append(("accepted no-op submits/s, gpuq api --workers 2 / --workers 1",
                     f"{c['workers_2']['accepted_per_s']:.0f}", f"{c['workers_1']['accepted_per_s']:.0f}",
                     f"{c['scaling_efficiency_2']:.2f} of 2x", ">= 0.9 x 2"))
        rows.append(("Redis cores 8 API processes would need at one's rate", f"{c['redis_cores_for_8']:.2f}", "",
                     "", "< 1 (one Redis core)"))
    widths = [max(len(r[i]) for r in rows + [("figure", "gpuq", "baseline", "ratio", "target")])
              for i in range(5)]
    for row in [("figure", "gpuq", "baseline", "ratio", "target"), *rows]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    if "framework" in out:
        for side in ("gpuq", "bare"):
            top = out["framework"][f"{side}_redis_commands_per_job"]
            print(f"  {side} Redis commands per no-op job: " + ", ".join(f"{k} {v:.1f}" for k, v in top.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"  summary -> {path.relative_to(path.parents[2])}")
