"""Groups of more than 1,500 members (AD's default MaxValRange) through both AD readers.

Measured on Samba 4.17: its Default Query Policy says MaxValRange=1500, yet a plain search
returns every value, even with the policy lowered to 100 and the DC restarted; only a request
naming a range (``member;range=0-1499``) is answered in ranges, exactly as AD answers a plain
one. So the first test reads big groups as the readers ask for them, and the others make the
uSNChanged poller ask for the first range itself, to get from the real DC the answer an AD DC
gives: the reader must then fetch the remaining ranges.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest

from connectors.ad import usn_poll as ad_usn_poll
from connectors.ad.usn_poll import UsnPollReader
from connectors.ad.values import same_dn
from idsync.rig.samba import SambaDC
from idsync.runtime import make_reader
from streams.events import ChangeOp, DirectoryChange
from tests.integration.ad.conftest import AdForests
from tests.integration.ad.test_dirsync_reader import changes_until, count, forest_of, only

pytestmark = pytest.mark.integration

MEMBERS = 1600


class Pool:
    """An OU of the alpha forest holding MEMBERS contacts, for the groups of this module's tests."""

    def __init__(self, dc: SambaDC, connection: ldap3.Connection, ou: str) -> None:
        self.dc = dc
        self.connection = connection
        self.ou = ou
        self.members = [f"CN=member {i},OU=pool,{ou}" for i in range(MEMBERS)]

    def group(self, name: str, members: list[str]) -> str:
        dn = f"CN={name},OU=groups,{self.ou}"
        self.connection.add(dn, ["top", "group"], {"sAMAccountName": f"g{secrets.token_hex(8)}"})
        for chunk in range(0, len(members), 400):
            self.connection.modify(dn, {"member": [(ldap3.MODIFY_ADD, members[chunk : chunk + 400])]})
        return dn


@pytest.fixture(scope="module")
def pool(ad_forests: AdForests) -> Iterator[Pool]:
    ou = f"OU=ranged-{secrets.token_hex(3)},{ad_forests.alpha.base_dn}"
    with ad_forests.alpha.admin_connection(raise_exceptions=True) as connection:
        for dn in (ou, f"OU=pool,{ou}", f"OU=groups,{ou}"):
            connection.add(dn, ["top", "organizationalUnit"])
        created = Pool(ad_forests.alpha, connection, ou)
        for dn in created.members:
            connection.add(dn, ["top", "person", "organizationalPerson", "contact"])
        yield created


@pytest.fixture
def asks_for_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """The poller asks for members from 0 to 1499, and gets them as an AD DC hands out a long list."""
    monkeypatch.setattr(ad_usn_poll, "_ATTRIBUTES", [*ad_usn_poll._ATTRIBUTES, "member;range=0-1499"])


def members(change: DirectoryChange) -> set[str]:
    attributes = {name.lower(): values for name, values in change.attributes.items()}
    return {dn.lower() for dn in attributes.get("member", ())}


def of(changes: tuple[DirectoryChange, ...] | list[DirectoryChange], dn: str) -> DirectoryChange:
    (change,) = [c for c in changes if same_dn(c.dn, dn)]
    return change


@pytest.mark.parametrize("mode", ["ad-dirsync", "ad-usn-poll"])
async def test_a_group_of_1600_members_is_published_whole(
    pool: Pool, unique_name: str, tmp_path: Path, mode: str
) -> None:
    group = pool.group(unique_name, pool.members)
    reader = make_reader(forest_of(pool.dc, "alpha", pool.ou, tmp_path, mode=mode))
    try:
        snapshot = await reader.read(None)
        assert members(of(snapshot.changes, group)) == {dn.lower() for dn in pool.members}
        extra = f"CN=extra {unique_name},OU=pool,{pool.ou}"
        pool.connection.add(extra, ["top", "person", "organizationalPerson", "contact"])
        pool.connection.modify(group, {"member": [(ldap3.MODIFY_ADD, [extra])]})
        changes, _ = await changes_until(reader, snapshot.position, count(2))
    finally:
        await reader.close()
    joined = of(changes, group)
    if mode == "ad-dirsync":  # a delta
        assert [(m.attribute, m.op, m.values) for m in joined.modifications] == [("member", "add", (extra,))]
    else:  # the whole list again
        assert members(joined) == {dn.lower() for dn in [*pool.members, extra]}


async def test_the_poller_fetches_the_ranges_after_the_first(
    pool: Pool, unique_name: str, tmp_path: Path, asks_for_ranges: None
) -> None:
    big, small = pool.group(f"{unique_name} big", pool.members), pool.group(f"{unique_name} small", pool.members[:2])
    reader = UsnPollReader(forest_of(pool.dc, "alpha", pool.ou, tmp_path, mode="ad-usn-poll"))
    try:
        snapshot = await reader.read(None)
        assert snapshot.rejected == ()
        assert members(of(snapshot.changes, big)) == {dn.lower() for dn in pool.members}
        assert members(of(snapshot.changes, small)) == {dn.lower() for dn in pool.members[:2]}
        pool.connection.modify(big, {"member": [(ldap3.MODIFY_DELETE, pool.members[-1:])]})
        changes, _ = await changes_until(reader, snapshot.position, count(1))
    finally:
        await reader.close()
    assert members(only(changes)) == {dn.lower() for dn in pool.members[:-1]}


@pytest.mark.parametrize("meanwhile", ["renamed", "deleted"])
async def test_a_group_renamed_or_deleted_before_its_next_range_is_read(
    pool: Pool, unique_name: str, tmp_path: Path, asks_for_ranges: None,
    monkeypatch: pytest.MonkeyPatch, meanwhile: str,
) -> None:
    reader = UsnPollReader(forest_of(pool.dc, "alpha", pool.ou, tmp_path, mode="ad-usn-poll"))
    try:
        position = (await reader.read(None)).position
        group = pool.group(unique_name, pool.members)
        renamed = f"CN={unique_name} renamed,OU=groups,{pool.ou}"
        next_range = UsnPollReader._next_range

        def interfered(self, *args):
            monkeypatch.setattr(UsnPollReader, "_next_range", next_range)  # once
            with pool.dc.admin_connection(raise_exceptions=True) as other:
                if meanwhile == "renamed":
                    other.modify_dn(group, renamed.split(",")[0])
                else:
                    other.delete(group)
            return next_range(self, *args)

        monkeypatch.setattr(UsnPollReader, "_next_range", interfered)
        first = await reader.read(position)
        assert first.rejected == () and next_range is UsnPollReader._next_range, "no range was fetched"
        later, _ = await changes_until(reader, first.position, count(1))
    finally:
        await reader.close()
    if meanwhile == "renamed":  # found by its GUID: whole, where the search saw it, then moved
        assert (only(first.changes).dn, members(only(first.changes))) == (group, {m.lower() for m in pool.members})
        assert (only(later).op, only(later).old_dn, only(later).dn) == (ChangeOp.MOVE, group, renamed)
    else:  # left out, then deleted
        assert first.changes == ()
        assert (only(later).op, only(later).dn) == (ChangeOp.DELETE, group)
