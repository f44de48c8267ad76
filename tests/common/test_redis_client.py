"""Redis URL handling for gpuq's own client and Celery's broker: plain, TLS and Sentinel."""
from __future__ import annotations

import pytest

from gpuq.common.celery_config import transport_options
from gpuq.common.redis_client import is_sentinel, parse_sentinel_url
from gpuq.common.settings import Settings

URL = "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"


def test_sentinel_url_list_gives_hosts_db_and_data_password() -> None:
    parsed = parse_sentinel_url(URL)
    assert parsed.hosts == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)]
    assert (parsed.db, parsed.password, parsed.username) == (2, "s3cret", None)
    assert "s3cret" not in repr(parsed)
    assert is_sentinel(URL) and not is_sentinel("rediss://h:6380/0")


def test_a_non_sentinel_entry_in_the_list_is_refused() -> None:
    with pytest.raises(ValueError, match="not a sentinel"):
        parse_sentinel_url("sentinel://a:26379;redis://:pw@b:6379")


def test_celery_gets_the_master_name_and_sentinel_password() -> None:
    opts = transport_options(Settings(redis_url=URL, redis_sentinel_master="gpuq",
                                      redis_sentinel_password="sentinel-pw"))
    assert opts["master_name"] == "gpuq" and opts["sentinel_kwargs"] == {"password": "sentinel-pw"}
    assert "master_name" not in transport_options(Settings(redis_url="rediss://h:6380/0?ssl_cert_reqs=required"))
