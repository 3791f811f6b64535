"""A forest's LDAP filter in both AD reader modes, against real Active Directory (Samba DCs): the
classic "enabled accounts only" filter. Disabling a user takes it out of scope (its contact goes),
enabling one brings it in whole."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from idsync.runtime import make_reader
from streams.contracts import ChangeReader
from streams.events import ChangeOp, DirectoryChange
from tests.integration.ad.conftest import Directory
from tests.integration.ad.test_dirsync_reader import changes_until, forest_of

pytestmark = pytest.mark.integration

ENABLED_ONLY = "(!(userAccountControl:1.2.840.113556.1.4.803:=2))"
# NORMAL_ACCOUNT | PASSWD_NOTREQD, and the same disabled (ACCOUNTDISABLE, 2): accounts without a password.
ENABLED, DISABLED = "544", "546"


def reader_for(directory: Directory, tmp_path: Path, mode: str) -> ChangeReader:
    forest = forest_of(directory.dc, "alpha", directory.ou, tmp_path, mode=mode)
    return make_reader(dataclasses.replace(forest, filter=ENABLED_ONLY))


def about(dn: str):
    return lambda seen: any(change.dn.lower() == dn.lower() for change in seen)


def only(changes: list[DirectoryChange]) -> DirectoryChange:
    assert len(changes) == 1, changes
    return changes[0]


@pytest.mark.parametrize("mode", ["ad-dirsync", "ad-usn-poll"])
async def test_disabled_accounts_are_out_of_scope(alpha: Directory, tmp_path: Path, mode: str) -> None:
    on = alpha.add_user("On", userAccountControl=ENABLED, displayName="On")
    off = alpha.add_user("Off", userAccountControl=DISABLED, displayName="Off")
    reader = reader_for(alpha, tmp_path, mode)
    try:
        snapshot = await reader.read(None)
        users = {change.dn.lower() for change in snapshot.changes if change.kind == "user"}
        assert users == {on.lower()}
        _, position = await changes_until(reader, snapshot.position, lambda seen: True)

        alpha.replace(on, userAccountControl=DISABLED)
        changes, position = await changes_until(reader, position, about(on))
        left = only(changes)
        assert (left.op, left.dn.lower()) == (ChangeOp.DELETE, on.lower())

        alpha.replace(off, userAccountControl=ENABLED)
        changes, position = await changes_until(reader, position, about(off))
        entered = only(changes)
        assert entered.op is ChangeOp.ADD
        assert entered.attributes["displayName"] == ("Off",)

        alpha.replace(off, displayName="Off Again")
        changes, position = await changes_until(reader, position, about(off))
        assert only(changes).op is (ChangeOp.MODIFY if mode == "ad-dirsync" else ChangeOp.ADD)

        # Out of scope: neither a change nor the delete of a disabled account is published.
        alpha.replace(on, displayName="On Again")
        alpha.delete(on)
        marker = alpha.add_user("Marker", userAccountControl=ENABLED)
        changes, position = await changes_until(reader, position, about(marker))
        assert [(change.op, change.dn.lower()) for change in changes] == [(ChangeOp.ADD, marker.lower())]
    finally:
        await reader.close()
