"""The DirSync reader woken by AD's change notifications (real Samba DC).

The poll interval is 30 s in the wake-up tests, so a change read within a few seconds was read
because the DC notified it, not because the poll came round.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from pathlib import Path

import pytest

from connectors.ad.dirsync import DirSyncReader
from connectors.ad.values import same_dn
from idsync.rig.forests import reader_forest
from streams.events import ChangeOp, DirectoryChange, Modification, ModOp
from tests.integration.ad.conftest import Directory

pytestmark = pytest.mark.integration

LONG_POLL_SECONDS = 30.0
# Far below LONG_POLL_SECONDS: reaching it proves the wake-up, whatever the machine's load.
WOKEN_WITHIN_SECONDS = 10.0


def display_name(value: str) -> tuple[Modification, ...]:
    return (Modification(attribute="displayName", op=ModOp.REPLACE, values=(value,)),)


def reader_for(directory: Directory, tmp_path: Path, *, wake: bool, poll_interval_seconds: float) -> DirSyncReader:
    forest = reader_forest(
        directory.dc,
        directory.ou,
        tmp_path / "alpha.password",
        name="alpha",
        mode="ad-dirsync",
        poll_interval_seconds=poll_interval_seconds,
        wake_on_change_notification=wake,
    )
    return DirSyncReader(forest)


async def read_until(reader: DirSyncReader, position: str, dn: str, *, timeout: float) -> tuple[DirectoryChange, str]:
    """Read as the source runner does (one read after another) until a change of `dn` arrives."""
    async def change_of_dn() -> tuple[DirectoryChange, str]:
        nonlocal position
        while True:
            batch = await reader.read(position)
            position = batch.position
            for change in batch.changes:
                if same_dn(change.dn, dn):
                    return change, position

    return await asyncio.wait_for(change_of_dn(), timeout)


async def subscribed(reader: DirSyncReader, position: str) -> str:
    """The first idle read starts the notification search, which wakes that read once it is up."""
    batch = await asyncio.wait_for(reader.read(position), WOKEN_WITHIN_SECONDS)
    assert batch.changes == ()
    return batch.position


async def test_a_notified_change_is_read_long_before_the_poll_interval(alpha: Directory, tmp_path: Path) -> None:
    user = alpha.add_user("Notified User")
    reader = reader_for(alpha, tmp_path, wake=True, poll_interval_seconds=LONG_POLL_SECONDS)
    try:
        position = await subscribed(reader, (await reader.read(None)).position)
        latencies = []
        for round_ in range(3):
            written = time.monotonic()
            alpha.replace(user, displayName=f"Round {round_}")
            change, position = await read_until(reader, position, user, timeout=WOKEN_WITHIN_SECONDS)
            latencies.append(time.monotonic() - written)
            assert change.op is ChangeOp.MODIFY
            assert change.modifications == display_name(f"Round {round_}")
        print(f"\nnotified modify read after {', '.join(f'{s * 1000:.0f}' for s in latencies)} ms")
    finally:
        await reader.close()


async def test_a_lost_notification_connection_is_subscribed_again(
    alpha: Directory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="connectors.ad.notify")
    user = alpha.add_user("Resubscribed User")
    reader = reader_for(alpha, tmp_path, wake=True, poll_interval_seconds=LONG_POLL_SECONDS)
    try:
        position = await subscribed(reader, (await reader.read(None)).position)
        # Fault injection from the client side: the DC's end of one connection cannot be killed alone.
        reader._notifications._subscription._search._connection.socket.shutdown(socket.SHUT_RDWR)
        # The new subscription wakes the idle read; then a change is notified again.
        position = await subscribed(reader, position)
        alpha.replace(user, displayName="After Resubscribe")
        change, _ = await read_until(reader, position, user, timeout=WOKEN_WITHIN_SECONDS)
        assert change.modifications == display_name("After Resubscribe")
        assert [r.getMessage().split(" forest=")[0] for r in caplog.records] == [
            "change notifications lost, polling only until subscribed again"
        ]
    finally:
        await reader.close()
    gc.collect()  # a socket left open would raise its ResourceWarning here, as an error


async def test_without_notifications_the_poll_reads_the_change(alpha: Directory, tmp_path: Path) -> None:
    user = alpha.add_user("Polled User")
    reader = reader_for(alpha, tmp_path, wake=False, poll_interval_seconds=0.2)
    try:
        position = (await reader.read(None)).position
        alpha.replace(user, displayName="Polled")
        change, _ = await read_until(reader, position, user, timeout=WOKEN_WITHIN_SECONDS)
        assert change.modifications == display_name("Polled")
        assert reader._notifications is None
    finally:
        await reader.close()
