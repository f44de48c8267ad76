"""Prometheus scrapes that read Redis: answer even when Redis does not (shared by the API and the worker)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)


def guarded(up_name: str, produce: Callable[[], Iterator[Metric]]) -> Iterator[Metric]:
    """``up_name`` (1 when Redis answered, else 0) followed by the families ``produce`` reads from Redis;
    when reading fails, only the gauge, so the scrape itself never fails."""
    up = GaugeMetricFamily(up_name, "1 when Redis answered this scrape")
    try:
        families = list(produce())
    except Exception as exc:  # noqa: BLE001 - a scrape must answer even when Redis does not
        log.warning("metrics: redis unavailable (%s): %s", up_name, exc)
        up.add_metric([], 0)
        yield up
        return
    up.add_metric([], 1)
    yield up
    yield from families
