"""The asyncio client against the real API: the same calls, awaited, including reconnecting event streams."""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from gpuq.client import AsyncClient, NotFound, RetryPolicy, WaitTimeout
from tests.conftest import KEY_A
from tests.support.tcp_proxy import TcpProxy

FAST = RetryPolicy(attempts=8, backoff_s=0.1, backoff_max_s=0.5)


def _synthetic(steps: int, step_ms: float = 0, **extra: object) -> dict[str, object]:
    return {"kind": "synthetic", "model": f"aio-{uuid.uuid4().hex[:8]}",
            "params": {"steps": steps, "step_ms": step_ms, **extra}}


def test_async_client_submits_waits_lists_and_downloads(api_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AsyncClient(api_url, KEY_A, retry=FAST) as gpuq:
            jobs = await asyncio.gather(*(gpuq.submit(**_synthetic(2, 10)) for _ in range(3)))
            done = await asyncio.gather(*(gpuq.wait(j.id, timeout=60) for j in jobs))
            assert [d.status for d in done] == ["succeeded"] * 3
            many = await gpuq.submit_many([_synthetic(1), _synthetic(2)], wait=30)
            assert [m.status for m in many] == ["succeeded"] * 2
            assert {j.id for j in jobs} <= {j.id for j in await gpuq.list(limit=50)}
            big = await gpuq.submit(**_synthetic(1, result_bytes=80_000), wait=30)
            paths = await gpuq.download_artifacts(big.id, tmp_path)
            assert paths[0].stat().st_size > 80_000
            slow = await gpuq.submit(**_synthetic(40, 100))
            with pytest.raises(WaitTimeout):
                await gpuq.wait(slow.id, timeout=0.3)
            await gpuq.cancel(slow.id)
            with pytest.raises(NotFound):
                await gpuq.get("f" * 32)
    asyncio.run(scenario())


def test_async_events_reconnect_after_a_cut(api_url: str) -> None:
    proxy = TcpProxy("127.0.0.1", int(api_url.rsplit(":", 1)[1]))

    async def scenario() -> list[str]:
        async with AsyncClient(proxy.url, KEY_A, retry=FAST) as gpuq:
            job = await gpuq.submit(**_synthetic(8, 150))
            seen = []
            async for event in gpuq.events(job.id):
                seen.append(event.type)
                if len(seen) == 4:
                    proxy.cut()
            return seen
    try:
        seen = asyncio.run(scenario())
    finally:
        proxy.close()
    assert seen[0] == "queued" and seen[1] == "started" and seen[-1] == "completed"
    assert seen.count("progress") == 8
