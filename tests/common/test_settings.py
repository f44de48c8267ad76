"""Settings parsing and the start-up safety checks."""
from __future__ import annotations

import pytest

from gpuq.common.celery_config import celery_config, check_visibility_timeout
from gpuq.common.errors import ConfigError
from gpuq.common.settings import Settings


def test_env_lists_and_pairs_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUQ_API_KEYS", "a:k1, b:k2")
    monkeypatch.setenv("GPUQ_MODEL_ROOTS", "/models:/more")
    monkeypatch.setenv("GPUQ_HUB_NAMESPACES", "a:org1|org2,b:org3")
    s = Settings()
    assert s.api_keys == {"k1": "a", "k2": "b"}
    assert [str(p) for p in s.model_roots] == ["/models", "/more"]
    assert s.hub_namespaces == {"a": ["org1", "org2"], "b": ["org3"]}
    assert (s.api_host, s.api_port) == ("127.0.0.1", 8000)


def test_malformed_api_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUQ_API_KEYS", "no-colon-here")
    with pytest.raises(ValueError, match="tenant:key"):
        Settings()


def test_prod_refuses_placeholder_keys_and_disables_synthetic_jobs() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings(env="prod", api_keys="t:changeme")
    assert Settings(env="prod", api_keys="t:" + "x" * 32).synthetic_jobs is False


def test_visibility_timeout_must_exceed_longest_time_limit() -> None:
    with pytest.raises(ConfigError, match="VISIBILITY_TIMEOUT"):
        check_visibility_timeout(Settings(job_time_limit_s=3600, visibility_timeout_s=3600))
    check_visibility_timeout(Settings(job_time_limit_s=600, visibility_timeout_s=7200))


def test_celery_config_is_json_only_acks_late_and_sets_visibility_everywhere() -> None:
    conf = celery_config(Settings(redis_url="redis://x:1/0", visibility_timeout_s=1234))
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1 and conf["task_track_started"]
    assert conf["worker_send_task_events"]
    assert conf["broker_transport_options"]["visibility_timeout"] == 1234
    assert conf["result_backend_transport_options"]["visibility_timeout"] == 1234
