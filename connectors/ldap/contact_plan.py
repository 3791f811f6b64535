"""What the contact writer does for one desired state, decided from the entries it found: pure
functions, no LDAP connection (connectors/ldap/contacts.py does the reading and writing).

- A contact is idsync's when it carries the person's anchor (``idsyncAnchor``).
- With none, a contact made by hand or by an older engine is taken over (adopted): the one the
  metaverse joined to the person (``adopt_dn``), else a hand-made contact under the contact's
  own name whose mail is absent or the same.
- The contact is named ``dn``; when another person's idsync contact holds that name, it is named
  ``fallback_dn``. A name held by an entry idsync must not take over blocks the write until that
  entry goes.
- Names are compared in canonical form (streams.rules.dn), so an unchanged name is never renamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from streams.contracts import Blocked
from streams.events import ANCHOR_ATTRIBUTE, ContactState, is_person_anchor
from streams.rules.dn import canonical, is_below, rdn_and_parent

MAIL = "mail"
CONTACT_CLASS = "contact"


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """An entry of the central forest, as the writer read it."""

    dn: str
    anchor: str | None = None
    object_classes: frozenset[str] = frozenset()  # lower-cased
    # Lower-cased attribute name -> values as text.
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_raw(cls, dn: str, raw: Mapping[str, list[bytes]]) -> Entry:
        attributes = {name.lower(): tuple(v.decode("utf-8", errors="replace") for v in values) for name, values in raw.items()}
        anchors = attributes.get(ANCHOR_ATTRIBUTE.lower(), ())
        return cls(
            dn=dn,
            # An anchor written before people were joined (forest/object_id) is no person's: such a
            # contact is taken over like one made by hand.
            anchor=anchors[0] if anchors and is_person_anchor(anchors[0]) else None,
            object_classes=frozenset(c.lower() for c in attributes.get("objectclass", ())),
            attributes=attributes,
        )

    def values(self, name: str) -> tuple[str, ...]:
        return self.attributes.get(name.lower(), ())


# The entry at a DN, or None when there is none: the writer's only question to the directory.
HolderOf = Callable[[str], Entry | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    # The contact to write: idsync's own, or one to take over (adopt); None: create one.
    entry: Entry | None
    adopt: bool = False
    # The name to create the contact at, or to rename it to; None: it keeps its name.
    target: str | None = None
    # Attribute -> the values it must have (empty: remove it); with the anchor when adopting.
    changes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The name the contact needs is held: nothing is created, an existing contact keeps its name.
    blocked: Blocked | None = None


def plan_contact(state: ContactState, own: Entry | None, holder_of: HolderOf) -> Plan:
    """What to do for a present state, given the entry carrying its anchor (`own`)."""
    entry, adopt = own, False
    if entry is None:
        entry = adoptee(state, holder_of)
        adopt = entry is not None
    name = contact_name(state, entry, holder_of)
    blocked = name if isinstance(name, Blocked) else None
    target = None
    if isinstance(name, str) and (entry is None or not same_name(entry.dn, name)):
        target = name
    if entry is None:
        return Plan(entry=None, target=target, blocked=blocked)
    changes = attribute_changes(entry, state)
    if adopt:
        changes[ANCHOR_ATTRIBUTE] = (state.anchor,)
    return Plan(entry=entry, adopt=adopt, target=target, changes=changes, blocked=blocked)


def adoptee(state: ContactState, holder_of: HolderOf) -> Entry | None:
    """The existing contact to take over, when no entry carries the anchor yet."""
    if state.adopt_dn:
        entry = holder_of(state.adopt_dn)
        if entry is not None and entry.anchor in (None, state.anchor):
            return entry
    for name in (state.dn, state.fallback_dn):
        entry = holder_of(name) if name else None
        if entry is not None and is_hand_made_twin(entry, state):
            return entry
    return None


def is_hand_made_twin(entry: Entry, state: ContactState) -> bool:
    """A contact no one manages whose mail is absent or the state's (ignoring case)."""
    if entry.anchor is not None or CONTACT_CLASS not in entry.object_classes:
        return False
    present = {v.lower() for v in entry.values(MAIL)}
    return not present or present == {v.lower() for v in _state_values(state, MAIL)}


def contact_name(state: ContactState, entry: Entry | None, holder_of: HolderOf) -> str | Blocked:
    """The contact's name: `dn`, unless another person's idsync contact holds it (then
    `fallback_dn`); Blocked when the name it needs is held by an entry idsync must not take over.
    A contact already under its fallback name stays there until `dn` is free."""
    wanted = state.dn
    assert wanted is not None, "a present state has a dn"
    if entry is not None and same_name(entry.dn, wanted):
        return entry.dn
    holder = holder_of(wanted)
    if _free(holder, state, entry):
        return wanted
    assert holder is not None
    fallback = state.fallback_dn
    at_fallback = entry is not None and fallback is not None and same_name(entry.dn, fallback)
    if holder.anchor is None:
        if at_fallback:
            return entry.dn
        return Blocked(reason=f"the name is held by {describe(holder)}", dn=wanted, blocker_dn=holder.dn)
    if fallback is None:
        return Blocked(reason=f"the name is held by another person's contact (anchor {holder.anchor}) "
                              "and the state has no fallback name", dn=wanted, blocker_dn=holder.dn)
    if at_fallback:
        return entry.dn
    second = holder_of(fallback)
    if _free(second, state, entry):
        return fallback
    assert second is not None
    return Blocked(reason=f"the name is held by another person's contact (anchor {holder.anchor}) and the "
                          f"fallback name by {describe(second)}", dn=fallback, blocker_dn=second.dn)


def describe(entry: Entry) -> str:
    if entry.anchor is not None:
        return f"another person's contact (anchor {entry.anchor})"
    if CONTACT_CLASS in entry.object_classes:
        return "a contact idsync does not manage, with another mail"
    classes = ", ".join(sorted(entry.object_classes)) or "unknown"
    return f"an entry idsync does not manage (objectClass {classes})"


def attribute_changes(entry: Entry, state: ContactState) -> dict[str, tuple[str, ...]]:
    """The managed attributes whose values differ: attribute -> what it must hold."""
    changes: dict[str, tuple[str, ...]] = {}
    for name in state.managed_attributes:
        desired = tuple(state.attributes.get(name, ()))
        if sorted(desired) != sorted(entry.values(name)):
            changes[name] = desired
    return changes


def same_name(left: str, right: str) -> bool:
    """One name: the same RDN (canonical: values unescaped and compared exactly), in the same
    container (compared ignoring case, as the directory compares ou and dc values)."""
    left_rdn, left_parent = rdn_and_parent(left)
    right_rdn, right_parent = rdn_and_parent(right)
    return canonical(left_rdn) == canonical(right_rdn) and same_container(left_parent, right_parent)


def same_container(left: str, right: str) -> bool:
    return is_below(left, right) and is_below(right, left)


def rdn_values(dn: str) -> tuple[tuple[str, str], ...]:
    """The (attribute type, value) pairs of a DN's first RDN, values unescaped."""
    rdns = canonical(dn)
    return rdns[0] if rdns else ()


def _free(holder: Entry | None, state: ContactState, entry: Entry | None) -> bool:
    """Nothing at the name, or the contact itself (idsync's, or the one being adopted)."""
    return holder is None or holder.anchor == state.anchor or (entry is not None and same_name(holder.dn, entry.dn))


def _state_values(state: ContactState, name: str) -> tuple[str, ...]:
    for attribute, values in state.attributes.items():
        if attribute.lower() == name:
            return tuple(values)
    return ()
