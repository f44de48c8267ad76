"""The webhook sender (``gpuq webhooks``): follows the event streams of jobs that asked for webhooks and
POSTs each subscribed event, signed, in order per job, retrying with exponential backoff.

It is its own process, so a receiver that is slow, failing or down delays only its own deliveries and
never a job. One sender is active at a time (a lease in Redis); a second one waits as a standby.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any, cast

import httpx
import redis.asyncio as aioredis

from gpuq.common import keys
from gpuq.common.errors import InvalidInput
from gpuq.common.events import parse_entry
from gpuq.common.outage import OUTAGE_ERRORS, Outage
from gpuq.common.records import decode_record
from gpuq.common.schemas import TERMINAL_EVENTS, JobEvent, WebhookSpec
from gpuq.common.settings import Settings
from gpuq.common.webhooks.lease import LEASE_S, SenderLease
from gpuq.common.webhooks.outbox import Delivery, Outbox, payload
from gpuq.common.webhooks.signing import SIGNATURE_HEADER, sign
from gpuq.common.webhooks.ssrf import Target, check_webhook_url

log = logging.getLogger(__name__)
READ_BLOCK_MS = 500
STREAMS_PER_READ = 256
# Longest the delivery loop sleeps without news; deliveries due earlier, or newly queued, wake it sooner.
IDLE_S = 1.0
USER_AGENT = "gpuq-webhooks/0.1"

class Sender:
    """Follow, enqueue, deliver. ``run()`` until ``stop()``."""

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self.settings = settings
        self.r = client
        self.outbox = Outbox(client, settings.record_ttl_s)
        self._stop = asyncio.Event()
        self._specs: dict[str, tuple[str, WebhookSpec] | None] = {}
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()  # set when a delivery is queued or one finishes
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)
        self.lease = SenderLease(client)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Wait for the lease, then follow and deliver until stopped or the lease is lost.

        A Redis outage of any length never ends this loop: the active cycle stops, and the sender takes (or
        keeps) the lease again once Redis is back, resuming from the cursors and outboxes stored there.
        """
        async with httpx.AsyncClient(timeout=self.settings.webhook_timeout_s, follow_redirects=False,
                                     headers={"User-Agent": USER_AGENT}) as http:
            self.http = http
            outage = Outage("webhook sender", log)
            while not self._stop.is_set():
                try:
                    held = await self.lease.acquire()
                    outage.ok()
                except OUTAGE_ERRORS as exc:
                    await self._sleep(outage.failed(exc))
                    continue
                if not held:
                    await self._sleep(1.0)
                    continue
                log.info("webhook sender active")
                failure = await self._active()
                if failure is not None:
                    await self._sleep(outage.failed(failure))
            await self._release()

    async def _active(self) -> BaseException | None:
        """One active cycle (follow, deliver, renew) until one of them ends; the outage that ended it, if any."""
        tasks = [asyncio.create_task(c) for c in (self._follow(), self._deliver(), self._lease())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [e for e in outcomes if isinstance(e, BaseException) and not isinstance(e, asyncio.CancelledError)]
        for error in errors:
            if not isinstance(error, OUTAGE_ERRORS):
                log.error("webhook sender cycle failed: %s: %s", type(error).__name__, error, exc_info=error)
        return next((e for e in errors if isinstance(e, OUTAGE_ERRORS)), None)

    async def _release(self) -> None:
        try:
            await self.lease.release()
        except OUTAGE_ERRORS as exc:  # the lease lapses on its own
            log.info("webhook sender lease not released (%s); it lapses within %.0f s", exc, LEASE_S)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    async def _lease(self) -> None:
        while not self._stop.is_set():
            await self._sleep(LEASE_S / 3)
            if not await self.lease.renew():
                log.warning("webhook sender lost its lease; going back to standby")
                return

    # --- following event streams -------------------------------------------------------------------
    async def _follow(self) -> None:
        sweep_at = 0.0
        while not self._stop.is_set():
            job_ids = await self.outbox.following()
            if time.monotonic() >= sweep_at:
                job_ids = await self._sweep(job_ids)
                sweep_at = time.monotonic() + 10
            if not job_ids:
                await self._sleep(0.2)
                continue
            cursors = await self.outbox.cursors(job_ids)
            chunks = [job_ids[i:i + STREAMS_PER_READ] for i in range(0, len(job_ids), STREAMS_PER_READ)]
            block = READ_BLOCK_MS if len(chunks) == 1 else None
            for chunk in chunks:
                resp = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]] | None,
                            await self.r.xread({keys.events(j): cursors[j] for j in chunk}, count=100, block=block))
                for stream, entries in resp or []:
                    job_id = stream.rsplit(":", 1)[-1]
                    for entry_id, fields in entries:
                        await self._on_event(job_id, parse_entry(entry_id, fields))

    async def _sweep(self, job_ids: list[str]) -> list[str]:
        """Forget followed jobs whose record no longer exists (expired, or a submit that failed)."""
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.exists(keys.job(job_id))
        alive = []
        for job_id, exists in zip(job_ids, await pipe.execute()):
            if exists:
                alive.append(job_id)
            else:
                await self.outbox.forget(job_id)
        return alive

    async def _subscription(self, job_id: str) -> tuple[str, WebhookSpec] | None:
        if job_id not in self._specs:
            tenant, raw = cast(list[str | None], await self.r.hmget(keys.job(job_id), ["tenant", "webhook"]))
            self._specs[job_id] = (tenant, WebhookSpec.model_validate_json(raw)) if tenant and raw else None
        return self._specs[job_id]

    async def _on_event(self, job_id: str, event: JobEvent) -> None:
        terminal = event.type in TERMINAL_EVENTS
        sub = await self._subscription(job_id)
        delivery, progress_at = None, None
        if sub is not None and event.type in sub[1].events:
            if event.type == "progress":
                progress_at = await self._progress_slot(job_id, event)
            if event.type != "progress" or progress_at is not None:
                delivery = await self._delivery(job_id, sub, event, terminal)
        await self.outbox.advance(job_id, event.id, terminal, delivery, progress_at)
        if delivery is not None:
            self._wake.set()
        if terminal:
            self._specs.pop(job_id, None)

    async def _progress_slot(self, job_id: str, event: JobEvent) -> float | None:
        """Throttle progress: deliver one per interval, and always the last step."""
        now = time.time()
        last = float((await self.outbox.state(job_id)).get("progress_at") or 0)
        done, total = event.data.get("done"), event.data.get("total")
        final = isinstance(done, int | float) and isinstance(total, int | float) and done >= total
        return now if final or now - last >= self.settings.webhook_progress_interval_s else None

    async def _delivery(self, job_id: str, sub: tuple[str, WebhookSpec], event: JobEvent,
                        terminal: bool) -> Delivery:
        job = None
        if terminal:
            raw = cast(dict[str, str], await self.r.hgetall(keys.job(job_id)))
            job = decode_record(raw).model_dump(mode="json") if raw else None
        return Delivery(job_id=job_id, event_id=event.id, event=event.type, tenant=sub[0], url=sub[1].url,
                        body=payload(job_id, event, job))

    # --- delivering ----------------------------------------------------------------------------------
    async def _deliver(self) -> None:
        """Start the due deliveries, then sleep until the next one is due or new work arrives."""
        while not self._stop.is_set():
            self._wake.clear()
            for job_id in await self.outbox.due(self.settings.webhook_concurrency * 2):
                if job_id not in self._busy:
                    self._busy.add(job_id)
                    task = asyncio.create_task(self._deliver_head(job_id))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            next_at = await self.outbox.next_due(exclude=self._busy)
            idle = IDLE_S if next_at is None else min(IDLE_S, max(0.0, next_at - time.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), idle)
            except TimeoutError:
                pass

    async def _deliver_head(self, job_id: str) -> None:
        try:
            async with self._slots:
                delivery = await self.outbox.head(job_id)
                if delivery is None:
                    await self.outbox.done(job_id)
                    return
                await self._attempt(job_id, delivery)
        except OUTAGE_ERRORS as exc:
            # The active cycle sees the outage too; the delivery stays due in Redis and is retried once it is
            # back (at least once: a POST that went out before the outage may be sent again).
            log.debug("webhook delivery for job %s interrupted by a Redis outage: %s", job_id, exc)
        except Exception:  # noqa: BLE001 - one bad delivery must not stop the sender
            log.exception("webhook delivery for job %s crashed; retrying later", job_id)
            with contextlib.suppress(*OUTAGE_ERRORS):
                await self.outbox.retry_later(job_id, self.backoff(1))
        finally:
            self._busy.discard(job_id)
            self._wake.set()

    async def _attempt(self, job_id: str, delivery: Delivery) -> None:
        attempt = await self.outbox.attempts(job_id) + 1
        try:
            outcome = await self._post(delivery, attempt)
        except InvalidInput as exc:
            log.warning("webhook for job %s refused at delivery: %s", job_id, exc.message)
            await self.outbox.done(job_id, dead=True)
            return
        if outcome is None:
            await self.outbox.done(job_id)
            return
        if attempt >= self.settings.webhook_max_attempts:
            log.warning("webhook %s %s given up after %d attempts: %s", job_id, delivery.event, attempt,
                        outcome)
            await self.outbox.done(job_id, dead=True)
            return
        delay = self.backoff(attempt)
        log.info("webhook %s %s attempt %d failed (%s); next in %.1f s", job_id, delivery.event, attempt,
                 outcome, delay)
        await self.outbox.retry_later(job_id, delay)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: base * 2^(attempt-1), capped, between 50% and 100% of it."""
        s = self.settings
        full = min(s.webhook_backoff_max_s, s.webhook_backoff_s * 2.0 ** (attempt - 1))
        return full / 2 + random.uniform(0, full / 2)

    async def _post(self, delivery: Delivery, attempt: int) -> str | None:
        """One attempt; None on a 2xx, else why it failed."""
        target = await asyncio.to_thread(check_webhook_url, delivery.url, self.settings.webhook_allowlist)
        secret = self.settings.webhook_secrets.get(delivery.tenant)
        if secret is None:
            raise InvalidInput(f"tenant {delivery.tenant!r} no longer has a webhook secret", field="webhook")
        body = delivery.body.encode()
        headers = {"Content-Type": "application/json", "X-Gpuq-Event": delivery.event,
                   "X-Gpuq-Delivery": f"{delivery.job_id}:{delivery.event_id}",
                   "X-Gpuq-Attempt": str(attempt), SIGNATURE_HEADER: sign(secret.get_secret_value(), body)}
        url, extensions = pinned(delivery.url, target)
        headers["Host"] = _host_header(target)
        try:
            resp = await self.http.post(url, content=body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        return None if resp.is_success else f"HTTP {resp.status_code}"


def pinned(url: str, target: Target) -> tuple[str, dict[str, Any]]:
    """The URL with its host replaced by the checked address (no second DNS lookup); SNI keeps the name."""
    extensions: dict[str, Any] = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return str(httpx.URL(url).copy_with(host=target.addresses[0], port=target.port)), extensions


def _host_header(target: Target) -> str:
    default = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == default else f"{host}:{target.port}"


def run_sender(settings: Settings) -> int:
    """Entry point of ``gpuq webhooks``: run until SIGINT/SIGTERM."""
    import signal

    from gpuq.common.redis_client import get_async_redis

    async def main() -> None:
        client = get_async_redis()
        sender = Sender(settings, client)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, sender.stop)
        try:
            await sender.run()
        finally:
            await client.aclose()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info("webhook sender starting (allowlist: %s)", ", ".join(settings.webhook_allowlist) or "none")
    asyncio.run(main())
    return 0

