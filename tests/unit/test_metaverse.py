from streams.events import ChangeOp, DirectoryChange, Modification, ModOp, ObjectKind
from streams.metaverse import SourceObject, apply_change, apply_modifications, classify


def change(op, position, **fields):
    return DirectoryChange(
        forest="forest-a",
        object_id="u1",
        op=op,
        dn=fields.pop("dn", "uid=alice,ou=people,dc=a"),
        position=position,
        changed_at="2026-11-22T05:00:00Z",
        **fields,
    )


ADD = change(
    ChangeOp.ADD,
    "20261122050000.000001Z",
    kind=ObjectKind.USER,
    attributes={"objectClass": ("inetOrgPerson",), "cn": ("Alice",), "Mail": ("a@x",)},
)


def test_add_keeps_attributes_with_lowercase_names():
    state = apply_change(None, ADD)
    assert state.attributes == {"objectclass": ("inetOrgPerson",), "cn": ("Alice",), "mail": ("a@x",)}
    assert state.kind is ObjectKind.USER and not state.deleted


def test_modify_applies_deltas_and_keeps_kind():
    state = apply_change(None, ADD)
    mods = (
        Modification(attribute="displayName", op=ModOp.REPLACE, values=("Alice Q",)),
        Modification(attribute="mail", op=ModOp.DELETE),
        Modification(attribute="member", op=ModOp.ADD, values=("cn=x", "cn=y")),
    )
    updated = apply_change(state, change(ChangeOp.MODIFY, "20261122050001.000000Z", modifications=mods))
    assert updated.attributes["displayname"] == ("Alice Q",)
    assert "mail" not in updated.attributes
    assert updated.attributes["member"] == ("cn=x", "cn=y")
    assert updated.kind is ObjectKind.USER


def test_redelivered_or_older_change_is_dropped():
    state = apply_change(None, ADD)
    assert apply_change(state, ADD) is None
    older = change(ChangeOp.DELETE, "20261122045959.000000Z")
    assert apply_change(state, older) is None


def test_delete_leaves_tombstone_that_blocks_late_redelivery():
    state = apply_change(None, ADD)
    gone = apply_change(state, change(ChangeOp.DELETE, "20261122050002.000000Z"))
    assert gone.deleted and gone.attributes == {} and gone.kind is ObjectKind.USER
    assert apply_change(gone, ADD) is None


def test_move_updates_dn_and_rdn_values():
    state = apply_change(None, ADD)
    mods = (
        Modification(attribute="cn", op=ModOp.ADD, values=("Alicia",)),
        Modification(attribute="cn", op=ModOp.DELETE, values=("Alice",)),
    )
    moved = apply_change(
        state,
        change(ChangeOp.MOVE, "20261122050003.000000Z", dn="cn=Alicia,ou=staff,dc=a", old_dn=state.dn, modifications=mods),
    )
    assert moved.dn == "cn=Alicia,ou=staff,dc=a"
    assert moved.attributes["cn"] == ("Alicia",)


def test_value_removal_and_empty_replace():
    attrs = {"member": ("a", "b")}
    assert apply_modifications(attrs, [Modification(attribute="member", op=ModOp.DELETE, values=("a",))]) == {
        "member": ("b",)
    }
    assert apply_modifications(attrs, [Modification(attribute="Member", op=ModOp.REPLACE)]) == {}


def test_state_round_trips_through_bytes():
    state = apply_change(None, ADD)
    assert SourceObject.from_bytes(state.to_bytes()) == state


def test_classify():
    assert classify(["top", "person", "organizationalPerson", "inetOrgPerson"]) is ObjectKind.USER
    assert classify(["top", "person", "organizationalPerson", "contact"]) is ObjectKind.CONTACT
    assert classify(["groupOfNames"]) is ObjectKind.GROUP
    assert classify(["organizationalUnit"]) is ObjectKind.OTHER
    assert classify(["user", "computer"]) is ObjectKind.OTHER
