"""Writes contacts into the central forest so that it matches a ContactState, idempotently.

A contact is found by its anchor (``idsyncAnchor``), never by its name, so renames and
moves of the source user rename or move the same contact. With no entry carrying the anchor, a
contact made by hand or by an older engine is adopted; names are chosen, and clashes decided,
by connectors/ldap/contact_plan.py. Only attributes that differ are written, and names are
compared in canonical form: applying the same state twice writes nothing the second time.
"""

from __future__ import annotations

import logging
from typing import Sequence

from ldap3 import BASE, DEREF_NEVER, MODIFY_DELETE, MODIFY_REPLACE, SUBTREE
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars

from connectors.ldap.contact_names import BatchNames
from connectors.ldap.contact_plan import Entry, Plan, plan_contact, rdn_values, same_container, same_name
from connectors.ldap.session import LdapSession, sorted_errors
from streams.config.forests import Forest
from streams.contracts import Blocked, PermanentError
from streams.events import ANCHOR_ATTRIBUTE, ContactState
from streams.rules.dn import DnError, canonical, rdn_and_parent

log = logging.getLogger(__name__)

# Anchors looked up per search: keeps the filter well inside servers' request size limits.
_LOOKUP_CHUNK = 100
# Read with every entry: what decides whether it is idsync's, and whether it may be adopted.
_IDENTITY = (ANCHOR_ATTRIBUTE, "objectClass", "mail")

Result = str | Blocked | PermanentError


class LdapContactWriter:
    def __init__(self, central: Forest) -> None:
        self._central = central
        self._session = LdapSession(central)
        self._known_containers: set[str] = set()

    def apply_all(self, states: Sequence[ContactState]) -> list[Result]:
        """Apply each state; per state, what was done, what blocks it for now, or why it can
        never be applied.

        The contacts are looked up by anchor in a few searches for the whole batch: one
        search per contact cost as much as the write itself. Names are looked up one by one,
        only for contacts to create, adopt or rename, after the writes before them. A lost
        connection raises RetriableError for the whole batch, which is then applied again
        (idempotently).
        """
        with self._session.connection() as connection:
            existing = self._find_all(connection, states)
            names = BatchNames(lambda dn: self._entry_at(connection, dn, states))
            names.prefetch(connection, _names_wanted(states, existing), _attributes_read(states))
            results: list[Result] = []
            for state in states:
                try:
                    with sorted_errors(self._central.name, on_connection_failure=self._session.close):
                        results.append(self._apply(connection, state, existing.get(state.anchor), names))
                except PermanentError as exc:
                    results.append(exc)
                except (DnError, ldap_errors.LDAPInvalidDnError) as exc:
                    results.append(PermanentError(f"anchor {state.anchor!r}: {exc}"))
            return results

    def managed_contacts(self, attributes: Sequence[str]) -> list[Entry]:
        """Every contact in the central forest that carries a person's anchor (a resync compares
        them with the desired states), with `attributes` read."""
        with self._session.connection() as connection:
            entries = connection.extend.standard.paged_search(
                self._central.base_dn, f"({ANCHOR_ATTRIBUTE}=*)", search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER, attributes=[ANCHOR_ATTRIBUTE, "objectClass", *attributes],
                generator=False,
            )
            found = [Entry.from_raw(e["dn"], e["raw_attributes"]) for e in entries if e.get("type") == "searchResEntry"]
        return [entry for entry in found if entry.anchor is not None]

    def close(self) -> None:
        self._session.close()

    def _apply(self, connection, state: ContactState, existing: Entry | list[Entry] | None,
               names: BatchNames) -> str | Blocked:
        if isinstance(existing, list):
            raise PermanentError(
                f"anchor {state.anchor!r} is on {len(existing)} entries: "
                + ", ".join(repr(e.dn) for e in existing)
            )
        if not state.present:
            if existing is None:
                return "absent"
            self._delete(connection, existing.dn)
            names.forget(existing.dn)
            return "deleted"
        plan = plan_contact(state, existing, names.holder)
        try:
            return self._carry_out(connection, state, plan)
        finally:
            # Whatever happened at these names, a later state of the batch looks them up again.
            names.forget(*(dn for dn in (plan.target, plan.entry.dn if plan.entry else None) if dn))

    def _carry_out(self, connection, state: ContactState, plan: Plan) -> str | Blocked:
        if plan.entry is None:
            if plan.blocked is not None:
                return plan.blocked
            assert plan.target is not None
            return self._create(connection, state, plan.target) or "created"
        actions = []
        if plan.changes:
            # Before any rename: an adopted contact carries the anchor from its first write on,
            # so a failure halfway leaves a contact found by its anchor next time.
            connection.modify(plan.entry.dn, _modifications(plan.changes))
            actions.append("adopted" if plan.adopt else "updated")
        if plan.target is not None:
            blocked = self._move(connection, plan.entry.dn, plan.target)
            if blocked is not None:
                return blocked
            actions.append("moved")
        return plan.blocked or "+".join(actions) or "unchanged"

    def _find_all(self, connection, states: Sequence[ContactState]) -> dict[str, Entry | list[Entry]]:
        """anchor -> its entry, or every entry carrying it when there is more than one."""
        anchors = sorted({state.anchor for state in states})
        found: dict[str, list[Entry]] = {}
        for chunk in range(0, len(anchors), _LOOKUP_CHUNK):
            wanted = "".join(
                f"({ANCHOR_ATTRIBUTE}={escape_filter_chars(a)})" for a in anchors[chunk : chunk + _LOOKUP_CHUNK]
            )
            entries = connection.extend.standard.paged_search(
                self._central.base_dn,
                f"(|{wanted})",
                search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER,
                attributes=_attributes_read(states),
                generator=False,
            )
            for entry in entries:
                if entry.get("type") == "searchResEntry":
                    found_entry = Entry.from_raw(entry["dn"], entry["raw_attributes"])
                    found.setdefault(found_entry.anchor or "", []).append(found_entry)
        return {anchor: entries[0] if len(entries) == 1 else entries for anchor, entries in found.items()}

    def _entry_at(self, connection, dn: str, states: Sequence[ContactState]) -> Entry | None:
        try:
            connection.search(
                dn, "(objectClass=*)", search_scope=BASE, dereference_aliases=DEREF_NEVER,
                attributes=_attributes_read(states),
            )
        except ldap_errors.LDAPNoSuchObjectResult:
            return None
        for entry in connection.response or ():
            if entry.get("type") == "searchResEntry":
                return Entry.from_raw(entry["dn"], entry["raw_attributes"])
        return None

    def _create(self, connection, state: ContactState, dn: str) -> Blocked | None:
        self._ensure_container(connection, rdn_and_parent(dn)[1])
        attributes = {name: list(values) for name, values in state.attributes.items()}
        for name, value in rdn_values(dn):
            # The naming attribute holds the name the entry gets (a fallback name too): a directory
            # refuses a name that is not among its values, and AD's cn has a single value.
            for given in [n for n in attributes if n.lower() == name]:
                del attributes[given]
            attributes[name] = [value]
        attributes[ANCHOR_ATTRIBUTE] = [state.anchor]
        try:
            connection.add(dn, list(state.object_classes), attributes)
        except ldap_errors.LDAPEntryAlreadyExistsResult:
            # Taken since it was looked up: decided again at the next attempt.
            return Blocked(reason="the name was taken while the contact was being created", dn=dn, blocker_dn=dn)
        return None

    def _move(self, connection, old_dn: str, new_dn: str) -> Blocked | None:
        rdn, parent = rdn_and_parent(new_dn)
        self._ensure_container(connection, parent)
        same_parent = same_container(rdn_and_parent(old_dn)[1], parent)
        try:
            connection.modify_dn(old_dn, rdn, delete_old_dn=True, new_superior=None if same_parent else parent)
        except ldap_errors.LDAPEntryAlreadyExistsResult:
            return Blocked(reason=f"the name was taken while {old_dn} was being renamed", dn=new_dn, blocker_dn=new_dn)
        return None

    def _delete(self, connection, dn: str) -> None:
        try:
            connection.delete(dn)
        except ldap_errors.LDAPNoSuchObjectResult:
            log.info("contact already gone dn=%s", dn)

    def _ensure_container(self, connection, container_dn: str) -> None:
        """Create the missing OUs between the central base DN and a forest's contact OU."""
        if container_dn in self._known_containers:
            return
        base_depth = len(canonical(self._central.base_dn))
        parts = [part.strip() for part in _rdns_as_written(container_dn)]
        for depth in range(len(parts) - base_depth - 1, -1, -1):
            if rdn_values(parts[depth])[0][0] != "ou":
                continue  # other containers are the directory owner's to create
            dn = ",".join(parts[depth:])
            try:
                connection.add(dn, ["top", "organizationalUnit"])
            except ldap_errors.LDAPEntryAlreadyExistsResult:
                continue
            log.info("container created dn=%s", dn)
        self._known_containers.add(container_dn)


def _names_wanted(states: Sequence[ContactState], existing: dict[str, Entry | list[Entry]]) -> list[str]:
    """The names the batch's creates, adoptions and renames will ask about."""
    wanted = []
    for state in states:
        entry = existing.get(state.anchor)
        if not state.present or isinstance(entry, list):
            continue
        if entry is None or state.dn is None or not _same_name(entry.dn, state.dn):
            wanted += [dn for dn in (state.dn, state.fallback_dn, None if entry else state.adopt_dn) if dn]
    return wanted


def _same_name(left: str, right: str) -> bool:
    try:
        return same_name(left, right)
    except DnError:
        return False  # the plan reports it


def _attributes_read(states: Sequence[ContactState]) -> list[str]:
    managed = {name.lower(): name for state in states for name in state.managed_attributes}
    return sorted({*_IDENTITY, *managed.values()})


def _modifications(changes: dict[str, tuple[str, ...]]) -> dict[str, list]:
    return {
        name: [(MODIFY_REPLACE, list(values))] if values else [(MODIFY_DELETE, [])]
        for name, values in changes.items()
    }


def _rdns_as_written(dn: str) -> list[str]:
    """The RDNs of a DN as written, leaf first."""
    rdns = []
    while dn:
        rdn, dn = rdn_and_parent(dn)
        rdns.append(rdn)
    return rdns
