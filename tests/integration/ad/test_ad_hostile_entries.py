"""Hostile entries against both AD readers in their own process (the worker's composition): each
becomes a correct event or an error record, and the stream goes on.

Measured on Samba 4.17: jpegPhoto takes a 1 MB value (thumbnailPhoto, userCertificate and the
string attributes refuse one), and every Unicode string attribute refuses bytes that are not
UTF-8 (invalidAttributeSyntax), so invalid UTF-8 never reaches a reader from this DC.
"""

from __future__ import annotations

import base64

import ldap3
import pytest
from ldap3.core.exceptions import LDAPInvalidAttributeSyntaxResult

from connectors.ad.values import escape_rdn_value, same_dn
from streams.events import MAX_EVENT_BYTES, ChangeOp, DirectoryChange
from tests.integration.ad.conftest import Directory
from tests.integration.ad.reader_harness import ReaderDeployment
from tests.integration.gal import eventually

pytestmark = pytest.mark.integration

MODES = ["ad-dirsync", "ad-usn-poll"]
HOSTILE = '#Hostile ,+="\\<>;# é'


def replace_unchecked(directory: Directory, dn: str, **values: bytes) -> None:
    """Replace values as raw bytes: without the schema, ldap3 sends them unchecked."""
    dc = directory.dc
    server = ldap3.Server(dc.url, get_info=ldap3.NONE)
    connection = ldap3.Connection(server, dc.admin_dn, dc.admin_password, auto_bind=True, raise_exceptions=True)
    try:
        connection.modify(dn, {name: [(ldap3.MODIFY_REPLACE, [value])] for name, value in values.items()})
    finally:
        connection.unbind()


def member_values(changes: list[DirectoryChange]) -> list[str]:
    """The member values a group's events carry: a whole list (ADD) or added values (MODIFY)."""
    values: list[str] = []
    for change in changes:
        values += [v for name, vs in change.attributes.items() if name.lower() == "member" for v in vs]
        values += [v for m in change.modifications if m.attribute.lower() == "member" for v in m.values]
    return values


@pytest.mark.parametrize("mode", MODES)
def test_hostile_entries_become_correct_events_or_error_records_and_the_stream_goes_on(
    alpha: Directory, reader: ReaderDeployment, mode: str
) -> None:
    reader.start()
    eventually(lambda: reader.stored_usn() is not None, timeout=60, what="the snapshot's stored position")

    hostile = alpha.add_user(HOSTILE, displayName=HOSTILE, thumbnailPhoto=bytes(range(256)))
    group = alpha.add_group("Hostile Members")
    alpha.members(group, ldap3.MODIFY_ADD, hostile)
    huge = alpha.add_user("Huge Photo", jpegPhoto=b"\xff" * (1024 * 1024))
    refused = alpha.add_user("Not UTF-8")
    with pytest.raises(LDAPInvalidAttributeSyntaxResult):
        replace_unchecked(alpha, refused, displayName=b"caf\xe9 \xff\xfe")
    after = alpha.add_user("After Hostile", displayName="After Hostile")

    def published() -> dict[str, DirectoryChange]:
        return {c.dn.lower(): c for c in reader.changes() if c.snapshot_id is None}

    eventually(lambda: after.lower() in published(), timeout=60, what="the change after the hostile ones")
    changes = list(published().values())
    (named,) = [c for c in changes if same_dn(c.dn, hostile)]
    attributes = {name.lower(): values for name, values in named.attributes.items()}
    assert (named.op, attributes["cn"], attributes["displayname"]) == (ChangeOp.ADD, (HOSTILE,), (HOSTILE,))
    assert base64.b64decode(attributes["thumbnailphoto;base64"][0]) == bytes(range(256))
    (member,) = member_values([c for c in reader.changes() if same_dn(c.dn, group)])
    assert same_dn(member, hostile)
    assert not [c for c in changes if same_dn(c.dn, huge)], "an event over the size limit was published"
    (letter,) = [d for d in reader.dead_letters() if repr(huge) in d.headers["reason"]]
    assert (letter.headers["stage"], letter.headers["forest"]) == ("reader", "alpha")
    assert f"over the {MAX_EVENT_BYTES} limit" in letter.headers["reason"] and letter.headers["source.position"]
    (plain,) = [c for c in changes if same_dn(c.dn, refused)]
    assert "displayname" not in {name.lower() for name in plain.attributes}  # the refused value never got in

    moved_to = f"CN={escape_rdn_value(HOSTILE + ' 2')},OU=a,{alpha.ou}"
    alpha.connection.modify_dn(hostile, moved_to.split(",OU=a,")[0])

    def history() -> list[DirectoryChange]:
        return [c for c in reader.changes() if c.object_id == named.object_id and c.snapshot_id is None]

    eventually(lambda: len(history()) == 2, timeout=60, what="the hostile entry's rename")
    alpha.delete(moved_to)
    eventually(lambda: len(history()) == 3, timeout=60, what="the hostile entry's delete")
    _, move, delete = history()
    assert (move.op, same_dn(move.old_dn, hostile), same_dn(move.dn, moved_to)) == (ChangeOp.MOVE, True, True)
    assert (delete.op, same_dn(delete.dn, moved_to)) == (ChangeOp.DELETE, True)
    assert reader.running
