"""Who holds a name in the central forest, looked up for a whole batch of contact states at once.

Before a contact is created, adopted or renamed the writer must know what sits at the names it
may take (its name, its clash name, the contact to adopt): looked up one by one, those searches
cost more than the writes themselves (a base search per name, then the add). Here the names of a
batch are looked up together: per container, one one-level search for every name wanted in it.
A name the batch's own writes touch is forgotten, so the next state that asks about it searches
it afresh, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

from ldap3 import DEREF_NEVER, LEVEL
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars

from connectors.ldap.contact_plan import Entry, rdn_values
from streams.rules.dn import DnError, canonical, rdn_and_parent

NameKey = tuple[tuple[tuple[str, str], ...], ...]
# Names asked for in one search; a filter of a few thousand characters is well within every server's limit.
_NAMES_PER_SEARCH = 100


@lru_cache(maxsize=16384)
def name_key(dn: str) -> NameKey:
    """The DN compared as directories compare names: attribute types and values ignoring case."""
    return tuple(tuple((name, value.casefold()) for name, value in rdn) for rdn in canonical(dn))


class BatchNames:
    def __init__(self, search_one: Callable[[str], Entry | None]) -> None:
        """`search_one(dn)`: the entry at `dn` or None, for names the batch did not look up."""
        self._search_one = search_one
        self._known: dict[NameKey, Entry | None] = {}

    def prefetch(self, connection, dns: Iterable[str], attributes: Sequence[str]) -> None:
        """Look up every name in `dns` (grouped by container, one search per up to 100 names)."""
        by_container: dict[NameKey, tuple[str, dict[NameKey, str]]] = {}
        for dn in dns:
            try:
                key = name_key(dn)
                parent = rdn_and_parent(dn)[1]
                by_container.setdefault(name_key(parent), (parent, {}))[1][key] = dn
            except DnError:
                continue  # left to the lookup of that one name, which reports it
        for parent, wanted in by_container.values():
            names = list(wanted.items())
            for start in range(0, len(names), _NAMES_PER_SEARCH):
                chunk = dict(names[start:start + _NAMES_PER_SEARCH])
                self._search_container(connection, parent, chunk, attributes)

    def holder(self, dn: str) -> Entry | None:
        key = name_key(dn)
        if key not in self._known:
            self._known[key] = self._search_one(dn)
        return self._known[key]

    def forget(self, *dns: str) -> None:
        """The batch wrote at these names: whoever holds them now is looked up again."""
        for dn in dns:
            self._known.pop(name_key(dn), None)

    def _search_container(self, connection, parent: str, wanted: dict[NameKey, str], attributes: Sequence[str]) -> None:
        terms = []
        for dn in wanted.values():
            pairs = "".join(f"({name}={escape_filter_chars(value)})" for name, value in rdn_values(dn))
            terms.append(f"(&{pairs})")
        try:
            connection.search(parent, f"(|{''.join(terms)})", search_scope=LEVEL, dereference_aliases=DEREF_NEVER,
                              attributes=list(attributes))
        except ldap_errors.LDAPNoSuchObjectResult:
            self._known.update(dict.fromkeys(wanted))  # no container yet: every name is free
            return
        found = {}
        for entry in connection.response or ():
            if entry.get("type") == "searchResEntry":
                found[name_key(entry["dn"])] = Entry.from_raw(entry["dn"], entry["raw_attributes"])
        if set(found) <= set(wanted):
            self._known.update({key: found.get(key) for key in wanted})
        else:
            # The server matched a name this comparison does not (its matching rules fold more,
            # e.g. inner spaces): what was not matched here is looked up by name after all.
            self._known.update({key: entry for key, entry in found.items() if key in wanted})
