from streams.events import ChangeOp, DirectoryChange, Modification, ModOp, ObjectKind, classify
from streams.rules.metaverse import SourceObject, apply_change, apply_modifications


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


def snapshot_add(position, snapshot_id, object_id="u1"):
    return DirectoryChange(
        forest="forest-a",
        object_id=object_id,
        op=ChangeOp.ADD,
        kind=ObjectKind.USER,
        dn=f"uid={object_id},dc=a",
        attributes={"cn": (object_id,)},
        position=position,
        changed_at="2026-11-22T05:00:00Z",
        snapshot_id=snapshot_id,
    )


def test_snapshot_marks_even_an_entry_newer_than_the_snapshot():
    newer = apply_change(None, change(ChangeOp.ADD, "20261122060000.000000Z", kind=ObjectKind.USER))
    marked = apply_change(newer, snapshot_add("20261122050000.000000Z", "s1"))
    assert marked.snapshot == "s1" and marked.attributes == newer.attributes and marked.position == newer.position
    assert apply_change(marked, snapshot_add("20261122050000.000000Z", "s1")) is None


def test_sweep_takes_unmarked_objects_no_newer_than_the_snapshot():
    from streams.events import SnapshotMarker, SnapshotPhase
    from streams.rules.metaverse import sweep_candidates

    seen = apply_change(None, snapshot_add("20261122050000.000000Z", "s1", "seen"))
    vanished = apply_change(None, snapshot_add("20261122040000.000000Z", "s0", "vanished"))
    created_after = apply_change(None, snapshot_add("20261122070000.000000Z", None, "late"))
    dead = SourceObject(forest="forest-a", object_id="dead", kind=ObjectKind.USER, dn="x", position="1", deleted=True)
    other_forest = SourceObject(forest="forest-b", object_id="b", kind=ObjectKind.USER, dn="y", position="1")
    marker = SnapshotMarker(forest="forest-a", snapshot_id="s1", phase=SnapshotPhase.END, high_water="20261122050000.000000Z")
    assert sweep_candidates([seen, vanished, created_after, dead, other_forest], marker) == [vanished]
    empty = SnapshotMarker(forest="forest-a", snapshot_id="s2", phase=SnapshotPhase.END, high_water=None)
    assert sweep_candidates([seen, created_after], empty) == []
    allowed = SnapshotMarker(
        forest="forest-a", snapshot_id="s2", phase=SnapshotPhase.END, high_water=None, allow_mass_delete=True
    )
    assert sweep_candidates([seen, created_after], allowed) == [seen, created_after]


def test_mass_delete_guard():
    from streams.rules.metaverse import sweep_refusal

    assert sweep_refusal(3, 4, max_fraction=0.25, always_allowed=10) is None
    assert sweep_refusal(25, 100, max_fraction=0.25, always_allowed=10) is None
    refusal = sweep_refusal(26, 100, max_fraction=0.25, always_allowed=10)
    assert "26 of 100" in refusal and "25%" in refusal
