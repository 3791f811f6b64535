"""No password hash or key leaves a reader: secret attributes are dropped from every change."""

from __future__ import annotations

from streams.events import ChangeOp, DirectoryChange, Modification, ModOp
from streams.kafka.publisher import without_secrets


def change(**fields) -> DirectoryChange:
    return DirectoryChange(
        forest="f", object_id="1", op=ChangeOp.ADD, dn="uid=a,dc=x", position="1", changed_at="2026-11-22T00:00:00Z",
        **fields,
    )


def test_secret_values_and_modifications_are_dropped_whatever_their_spelling_or_options() -> None:
    added = change(attributes={"cn": ("a",), "userPassword": ("{SSHA}x",), "userPassword;base64": ("AAEC",), "UNICODEPWD": ("x",)})
    assert without_secrets(added).attributes == {"cn": ("a",)}
    modified = change(
        modifications=(
            Modification(attribute="displayName", op=ModOp.REPLACE, values=("A",)),
            Modification(attribute="pwdHistory", op=ModOp.ADD, values=("h",)),
            Modification(attribute="sambaNTPassword", op=ModOp.REPLACE, values=("n",)),
        )
    )
    assert [m.attribute for m in without_secrets(modified).modifications] == ["displayName"]


def test_a_change_without_secrets_is_passed_on_as_it_is() -> None:
    plain = change(attributes={"cn": ("a",), "passwordHint": ("not a secret by name",)})
    assert without_secrets(plain) is plain
