"""Static properties of the fine-tune kinds: queues, time limits, metric names, stored params."""
from __future__ import annotations

import typing

from gpuq.common.celery_config import VISIBILITY_MARGIN_S
from gpuq.common.jobs.datasource import MetricName
from gpuq.common.jobs.registry import get_spec
from gpuq.common.settings import Settings


def test_training_kinds_share_the_finetune_queue() -> None:
    assert {get_spec(k).queue for k in ("finetune", "tokenizer", "evaluate")} == {"finetune"}


def test_finetune_time_limit_fits_the_default_visibility_timeout() -> None:
    settings = Settings(visibility_timeout_s=7200)
    assert settings.visibility_timeout_s >= get_spec("finetune").effective_time_limit(settings) + VISIBILITY_MARGIN_S


def test_submit_side_metric_names_are_the_shipped_ones() -> None:
    from gpuq.worker.metrics import METRIC_NAMES

    assert set(typing.get_args(MetricName)) == set(METRIC_NAMES)


def test_files_live_next_to_the_artifact_store_unless_configured(tmp_path: typing.Any) -> None:
    assert Settings(artifact_dir=tmp_path / "artifacts").files_root == tmp_path / "files"
    assert Settings(files_dir=tmp_path / "up").files_root == tmp_path / "up"
