"""Every event of the accesslog readers names its object's kind, also for objects a freshly
started reader meets first: a few are looked up by entryUUID, a backlog of many by one scan."""

from __future__ import annotations

from pathlib import Path

import ldap3
import pytest

from connectors.ldap.scope import _SCAN_INSTEAD_OF_LOOKUP
from idsync.rig.forests import reader_forest
from idsync.runtime import make_reader
from streams.events import ObjectKind
from tests.conftest import Directories
from tests.integration.readers import Directory, read_like_the_runner

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["accesslog-sync", "accesslog-poll"])
@pytest.mark.parametrize("users", [3, _SCAN_INSTEAD_OF_LOOKUP + 20], ids=["looked-up", "scanned"])
async def test_a_new_reader_names_the_kind_of_objects_it_never_saw(
    directories: Directories, base: str, tmp_path: Path, mode: str, users: int
) -> None:
    directory = Directory(directories.forest_a)
    dns = [directory.add_user(base, f"kind{i}") for i in range(users)]
    group = directory.add_group(base, "kinds", members=dns[:2])
    forest = reader_forest(directories.forest_a, base, tmp_path / "password", name="forest-kinds", mode=mode)
    first = make_reader(forest)
    try:
        snapshot = await first.read(None)
    finally:
        await first.close()

    with directory.connection() as connection:
        for dn in [*dns, group]:
            connection.modify(dn, {"description": [(ldap3.MODIFY_REPLACE, ["changed"])]})
    # A new reader knows none of them: the adds it would have learnt kinds from are behind it.
    second = make_reader(forest)
    try:
        changes, _ = await read_like_the_runner(second, snapshot.position, users + 1, timeout=30)
    finally:
        await second.close()
    modified = [c for c in changes if any(m.attribute == "description" for m in c.modifications)]
    kinds = {c.dn: c.kind for c in modified}
    assert len(kinds) == users + 1
    assert kinds.pop(group) is ObjectKind.GROUP
    assert set(kinds.values()) == {ObjectKind.USER}
