"""A PostgreSQL site store's password (topology's password_env / password_file): read at each
connect, a missing one waited out like a server that is down, its value never in an error.
(With the real server: tests/integration/test_site_reader.py and test_site_components.py.)"""

from __future__ import annotations

import pytest

from connectors.sites import open_site_store
from connectors.sites.engines import PostgresEngine
from idsync.rig.ports import free_port
from streams.config.security import Secret
from streams.config.sites import SiteStoreSettings
from streams.contracts import RetriableError


def settings(password: Secret | None) -> SiteStoreSettings:
    return SiteStoreSettings(name="pg", location=f"postgresql://idsync@127.0.0.1:{free_port()}/sites",
                             password=password, poll_interval_seconds=1.0)


def test_a_password_that_cannot_be_read_is_retriable_and_names_where_it_was_looked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDSYNC_TEST_NO_SUCH_PASSWORD", raising=False)
    with pytest.raises(RetriableError, match="password unavailable.*IDSYNC_TEST_NO_SUCH_PASSWORD"):
        open_site_store(settings(Secret(env="IDSYNC_TEST_NO_SUCH_PASSWORD", key="sites.stores[0].password_env")))


def test_the_password_is_read_at_each_connect_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []

    def password() -> str:
        reads.append("read")
        return "s3cret-value"

    engine = PostgresEngine(f"postgresql://idsync@127.0.0.1:{free_port()}/sites", connect_timeout=1,
                            password=password)
    for attempt in (1, 2):
        with pytest.raises(RetriableError) as raised:
            with engine.transaction():
                pass
        assert "s3cret-value" not in str(raised.value) and len(reads) == attempt
