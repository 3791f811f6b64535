"""Writes contacts into the central forest so that it matches a ContactState, idempotently.

A contact is found by its anchor (``idsyncAnchor``), never by its name, so renames and
moves of the source user rename or move the same contact.  Only attributes that differ are
written: applying the same state twice writes nothing the second time.
"""

from __future__ import annotations

import logging
from typing import Sequence

from ldap3 import DEREF_NEVER, MODIFY_DELETE, MODIFY_REPLACE, SUBTREE
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from connectors.ldap.session import LdapSession, sorted_errors
from streams.config.topology import Forest
from streams.contracts import PermanentError
from streams.events import ANCHOR_ATTRIBUTE, ContactState

log = logging.getLogger(__name__)

# Anchors looked up per search: keeps the filter well inside servers' request size limits.
_LOOKUP_CHUNK = 100


class LdapContactWriter:
    def __init__(self, central: Forest) -> None:
        self._central = central
        self._session = LdapSession(central)
        self._known_containers: set[str] = set()

    def apply_all(self, states: Sequence[ContactState]) -> list[str | PermanentError]:
        """Apply each state; per state, what was done or why it can never be applied.

        The contacts are looked up by anchor in a few searches for the whole batch: one
        search per contact cost as much as the write itself. A lost connection raises
        RetriableError for the whole batch, which is then applied again (idempotently).
        """
        with self._session.connection() as connection:
            existing = self._find_all(connection, states)
            results: list[str | PermanentError] = []
            for state in states:
                try:
                    with sorted_errors(self._central.name, on_connection_failure=self._session.close):
                        results.append(self._apply(connection, state, existing.get(state.anchor)))
                except PermanentError as exc:
                    results.append(exc)
            return results

    def close(self) -> None:
        self._session.close()

    def _apply(self, connection, state: ContactState, existing: dict | list[dict] | None) -> str:
        if isinstance(existing, list):
            raise PermanentError(
                f"anchor {state.anchor!r} is on {len(existing)} entries: "
                + ", ".join(repr(e["dn"]) for e in existing)
            )
        if not state.present:
            if existing is None:
                return "absent"
            self._delete(connection, existing["dn"])
            return "deleted"
        if existing is None:
            self._create(connection, state)
            return "created"
        actions = []
        if _normalized(existing["dn"]) != _normalized(state.dn):
            self._move(connection, existing["dn"], state)
            actions.append("moved")
        changes = _attribute_changes(existing["raw_attributes"], state)
        if changes:
            connection.modify(state.dn, changes)
            actions.append("updated")
        return "+".join(actions) or "unchanged"

    def _find_all(self, connection, states: Sequence[ContactState]) -> dict[str, dict | list[dict]]:
        """anchor -> its entry, or every entry carrying it when there is more than one."""
        attributes = sorted({name for state in states for name in state.managed_attributes}) or ["1.1"]
        anchors = sorted({state.anchor for state in states})
        found: dict[str, list[dict]] = {}
        for chunk in range(0, len(anchors), _LOOKUP_CHUNK):
            wanted = "".join(
                f"({ANCHOR_ATTRIBUTE}={escape_filter_chars(a)})" for a in anchors[chunk : chunk + _LOOKUP_CHUNK]
            )
            entries = connection.extend.standard.paged_search(
                self._central.base_dn,
                f"(|{wanted})",
                search_scope=SUBTREE,
                dereference_aliases=DEREF_NEVER,
                attributes=[ANCHOR_ATTRIBUTE, *attributes],
                generator=False,
            )
            for entry in entries:
                if entry.get("type") == "searchResEntry":
                    anchor = entry["raw_attributes"][ANCHOR_ATTRIBUTE][0].decode()
                    found.setdefault(anchor, []).append(entry)
        return {anchor: entries[0] if len(entries) == 1 else entries for anchor, entries in found.items()}

    def _create(self, connection, state: ContactState) -> None:
        self._ensure_container(connection, state.container_dn)
        attributes = {name: list(values) for name, values in state.attributes.items()}
        attributes[ANCHOR_ATTRIBUTE] = [state.anchor]
        try:
            connection.add(state.dn, list(state.object_classes), attributes)
        except ldap_errors.LDAPEntryAlreadyExistsResult as exc:
            raise PermanentError(
                f"contact {state.dn!r} for anchor {state.anchor!r} conflicts with an existing entry"
            ) from exc

    def _move(self, connection, old_dn: str, state: ContactState) -> None:
        rdn, parent = _split(state.dn)
        self._ensure_container(connection, parent)
        same_parent = _normalized(_split(old_dn)[1]) == _normalized(parent)
        try:
            connection.modify_dn(
                old_dn, rdn, delete_old_dn=True, new_superior=None if same_parent else parent
            )
        except ldap_errors.LDAPEntryAlreadyExistsResult as exc:
            raise PermanentError(
                f"cannot rename contact {old_dn!r} to {state.dn!r} for anchor {state.anchor!r}: "
                "the new name is taken"
            ) from exc

    def _delete(self, connection, dn: str) -> None:
        try:
            connection.delete(dn)
        except ldap_errors.LDAPNoSuchObjectResult:
            log.info("contact already gone dn=%s", dn)

    def _ensure_container(self, connection, container_dn: str) -> None:
        """Create the missing OUs between the central base DN and a forest's contact OU."""
        if container_dn in self._known_containers:
            return
        base_depth = len(parse_dn(self._central.base_dn))
        components = parse_dn(container_dn)
        for depth in range(len(components) - base_depth - 1, -1, -1):
            name = components[depth][0]
            if name.lower() != "ou":
                continue  # other containers are the directory owner's to create
            dn = ",".join(f"{n}={v}" for n, v, _ in components[depth:])
            try:
                connection.add(dn, ["top", "organizationalUnit"])
            except ldap_errors.LDAPEntryAlreadyExistsResult:
                continue
            log.info("container created dn=%s", dn)
        self._known_containers.add(container_dn)


def _attribute_changes(current_raw: dict, state: ContactState) -> dict[str, list]:
    current = {name.lower(): [v.decode("utf-8", errors="replace") for v in values] for name, values in current_raw.items()}
    changes: dict[str, list] = {}
    for name in state.managed_attributes:
        desired = list(state.attributes.get(name, ()))
        present = current.get(name.lower(), [])
        if sorted(desired) == sorted(present):
            continue
        changes[name] = [(MODIFY_REPLACE, desired)] if desired else [(MODIFY_DELETE, [])]
    return changes


def _split(dn: str) -> tuple[str, str]:
    components = parse_dn(dn)
    name, value, _ = components[0]
    return f"{name}={value}", ",".join(f"{n}={v}" for n, v, _ in components[1:])


def _normalized(dn: str) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value, _ in parse_dn(dn)]
