"""A password hash never reaches a topic or a log: not with a change, not with a record rejected for
its size and sent to the error topic."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets

import pytest

from streams.config.metaverse import engine_settings
from tests.integration.gal import GalDeployment, eventually
from tests.integration.test_gal_sync import SYNC_DEADLINE, contact_named, read_all, wait_until_running

pytestmark = pytest.mark.integration


def ssha(password: str) -> str:
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def test_an_entry_rejected_for_its_size_reaches_the_error_topic_without_its_password_hash(gal: GalDeployment) -> None:
    wait_until_running(gal)
    password = secrets.token_urlsafe(12)
    big_hash, small_hash = ssha(password), ssha(password)
    gal.add_user("forest_a", "big.secret", description="x" * 1_000_000, userPassword=big_hash)
    small = gal.add_user("forest_b", "small.secret", userPassword=small_hash)
    gal.modify("forest_b", small, userPassword=ssha(password), displayName="Small Secret")
    eventually(lambda: (contact_named(gal, "forest_b", "small.secret") or {}).get("displayname") == ["Small Secret"],
               timeout=SYNC_DEADLINE, what="the small user's contact")

    topics = gal.topology.kafka.topics
    [(headers, letter)] = [
        (headers, value) for headers, value in asyncio.run(read_all(gal.broker.bootstrap_servers, topics.errors,
                                                                    at_least=1))
        if "big.secret" in headers.get("idsync.errors.reason", "")
    ]
    assert headers["idsync.errors.stage"] == "reader" and "over the" in headers["idsync.errors.reason"]
    assert b"big.secret" in letter and b"xxxxxxxx" in letter  # the record is there, its hash is not

    hashes = [big_hash.encode(), small_hash.encode(), password.encode(), b"{SSHA}"]
    engine = engine_settings(gal.topology).topics
    for topic in {topics.changes, topics.errors, topics.contacts, topics.positions, *engine.consumed()}:
        for _, value in asyncio.run(read_all(gal.broker.bootstrap_servers, topic, at_least=10**9, timeout=3)):
            assert not [h for h in hashes if h in (value or b"")], f"a password hash on {topic}"
    log = gal.workers[-1].log_path.read_bytes()
    assert not [h for h in hashes if h in log]
