"""The forests of the topology: where each directory is, how idsync binds to it and captures its
changes, which of its objects it publishes and which become contacts. Validated with every problem
at its YAML path (streams/config/sections.py); a forest's password is named here, never held."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ldap3.core.exceptions import LDAPInvalidDnError, LDAPInvalidFilterError
from ldap3.operation.search import compile_filter, parse_filter
from ldap3.utils.dn import parse_dn

from streams.events import ObjectKind
from streams.config.metaverse import DEFAULT_EXPORT_KINDS, export_kinds, export_without_mail
from streams.config.sections import Section, choice, kind_of, rule
from streams.config.security import LdapTls, Secret, ldap_tls, secret

Role = Literal["user", "central"]
ROLES: tuple[Role, ...] = ("user", "central")
# How a forest's changes are captured; idsync/runtime.py maps each mode to its reader.
# accesslog-poll: slapd accesslog polled with an overlap window (connectors/openldap/accesslog_poll.py)
# accesslog-sync: RFC 4533 refreshAndPersist on slapd's accesslog (push, cookie-resumable)
# ad-dirsync: Active Directory DirSync control (cookie-resumable, tombstones for deletes)
# ad-usn-poll: Active Directory uSNChanged polling, deletes from the Deleted Objects container
# generic-poll: any LDAP server, modifyTimestamp polling; deletes only found by reconciliation
CHANGE_CAPTURE_MODES = ("accesslog-poll", "accesslog-sync", "ad-dirsync", "ad-usn-poll", "generic-poll")
DEFAULT_OBJECT_KINDS = frozenset({ObjectKind.USER, ObjectKind.GROUP, ObjectKind.CONTACT})


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeCapture:
    mode: str
    poll_interval_seconds: float
    overlap_seconds: float
    accesslog_base: str
    # generic-poll: how often a full scan compares the directory with what was published.
    reconcile_interval_seconds: float = 300.0
    # Changes made by these accounts are flagged as idsync's own (DirectoryChange.written_by_idsync).
    writer_accounts: tuple[str, ...] = ()
    # ad-dirsync: a change notification search wakes the poll at once; the interval stays the safety net.
    wake_on_change_notification: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Forest:
    name: str
    role: Role
    url: str
    base_dn: str
    bind_dn: str
    password: Secret
    change_capture: ChangeCapture
    contacts_ou: str | None
    # What the forest's reader publishes; OUs, computers and other objects are left out by default.
    object_kinds: frozenset[ObjectKind] = DEFAULT_OBJECT_KINDS
    # An LDAP filter the directory applies on top of base_dn and object_kinds.
    filter: str | None = None
    # User forests: which published objects become contacts, and whether those without mail do
    # (then without mail and SIP). The central forest exports nothing; its values are unused.
    export_kinds: frozenset[ObjectKind] = DEFAULT_EXPORT_KINDS
    export_without_mail: bool = False
    # How the connection is encrypted (with an ldaps:// url, or StartTLS) and what is verified.
    tls: LdapTls = LdapTls()

    @property
    def encryption(self) -> str:
        """ldaps, starttls or none."""
        if self.url.lower().startswith("ldaps:"):
            return "ldaps"
        return "starttls" if self.tls.starttls else "none"


def forests(top: Section, base_dir: Path | None) -> tuple[Forest, ...]:
    keys = ("name", "role", "url", "base_dn", "bind_dn", "password_env", "password_file", "change_capture",
            "contacts_ou", "object_kinds", "filter", "export_kinds", "export_without_mail", "tls")
    items = top.value("forests", (list,), "a list") or []
    if not items and top.given("forests"):
        top.error("forests", "must list at least the central forest")
    forests = tuple(_forest(Section(top.errors, item, f"forests[{i}]", keys), base_dir)
                    for i, item in enumerate(items))

    named: dict[str, int] = {}
    for i, forest in enumerate(forests):
        if forest.name is not None and named.setdefault(forest.name, i) != i:
            top.errors.append(f"forests[{i}].name: {forest.name!r} is already used by forests[{named[forest.name]}]")
    centrals = [i for i, forest in enumerate(forests) if forest.role == "central"]
    for i in centrals[1:]:
        top.errors.append(f"forests[{i}].role: forests[{centrals[0]}] is already central; exactly one forest is")
    if forests and not centrals and all(forest.role is not None for forest in forests):
        top.errors.append("forests: no forest has role central; exactly one must, to receive the contacts")

    central_base = forests[centrals[0]].base_dn if centrals else None
    owners: dict[tuple[Any, ...], int] = {}
    for i, forest in enumerate(forests):
        if forest.contacts_ou is None:
            continue
        ou = _rdns(forest.contacts_ou)
        if central_base is not None and not (len(ou) > len(base := _rdns(central_base)) and ou[-len(base):] == base):
            top.errors.append(f"forests[{i}].contacts_ou: must be under the central forest's base_dn {central_base!r}")
        if owners.setdefault(ou, i) != i:
            top.errors.append(f"forests[{i}].contacts_ou: same OU as forests[{owners[ou]}].contacts_ou; each user "
                              "forest needs its own, because the sink owns everything under it")
    return forests


def _forest(sec: Section, base_dir: Path | None) -> Forest:
    name = sec.text("name", check=_FOREST_NAME)
    role = sec.text("role", check=choice(ROLES))
    url = sec.text("url", check=_url_problem)
    base_dn, bind_dn = sec.text("base_dn", check=_dn_problem), sec.text("bind_dn", check=_dn_problem)
    contacts_ou = sec.text("contacts_ou", None, check=_dn_problem)
    if role == "central" and sec.given("contacts_ou"):
        sec.error("contacts_ou", "not allowed on the central forest: contacts are made in it, not copied from it")
    elif role == "user" and not sec.given("contacts_ou"):
        sec.error("contacts_ou", "required for a user forest: the OU of the central forest receiving its contacts")
    capture = sec.child("change_capture", ("mode", "poll_interval_seconds", "overlap_seconds", "accesslog_base",
                                           "reconcile_interval_seconds", "wake_on_change_notification",
                                           "writer_accounts"))
    mode = capture.text("mode", CHANGE_CAPTURE_MODES[0], check=choice(CHANGE_CAPTURE_MODES))
    return Forest(
        name=name,
        role=role,
        url=url,
        base_dn=base_dn,
        bind_dn=bind_dn,
        password=secret(sec, base_dir),
        change_capture=ChangeCapture(
            mode=mode,
            poll_interval_seconds=capture.number("poll_interval_seconds", 0.2, minimum=0, inclusive=False,
                                                 maximum=3600),
            overlap_seconds=capture.number("overlap_seconds", 2.0, minimum=0, inclusive=True, maximum=3600),
            accesslog_base=capture.text("accesslog_base", "cn=accesslog", check=_dn_problem),
            reconcile_interval_seconds=capture.number(
                "reconcile_interval_seconds", 300.0, minimum=0, inclusive=False, maximum=7 * 86400
            ),
            writer_accounts=_writer_accounts(capture, role, bind_dn),
            wake_on_change_notification=_wake_on_change_notification(capture, mode),
        ),
        contacts_ou=contacts_ou if role == "user" else None,
        object_kinds=(object_kinds := _object_kinds(sec)),
        filter=sec.text("filter", None, check=ldap_filter_problem),
        export_kinds=export_kinds(sec, role, object_kinds),
        export_without_mail=export_without_mail(sec, role),
        tls=ldap_tls(sec, base_dir),
    )


def _wake_on_change_notification(capture: Section, mode: str | None) -> bool:
    wake = capture.value("wake_on_change_notification", (bool,), "true or false", False)
    if wake and mode is not None and mode != "ad-dirsync":
        capture.error("wake_on_change_notification", f"only for mode ad-dirsync (AD's change notification "
                      f"control), not {mode}")
    return bool(wake)


def _object_kinds(sec: Section) -> frozenset[ObjectKind]:
    names = sec.value("object_kinds", (list,), "a list", sorted(DEFAULT_OBJECT_KINDS)) or []
    known = [kind.value for kind in ObjectKind]
    kinds = set()
    for i, name in enumerate(names):
        if name in known:
            kinds.add(ObjectKind(name))
        else:
            sec.error(f"object_kinds[{i}]", f"unknown kind {name!r}; known: {', '.join(known)}")
    if not names and sec.given("object_kinds"):
        sec.error("object_kinds", "must not be empty")
    return frozenset(kinds) or DEFAULT_OBJECT_KINDS


def _writer_accounts(capture: Section, role: Role | None, bind_dn: str | None) -> tuple[str, ...]:
    """By default the central forest's own bind_dn: the account the contact writer binds as."""
    default = [bind_dn] if role == "central" and bind_dn is not None else []
    accounts = capture.value("writer_accounts", (list,), "a list of DNs", default) or []
    mode = capture.node.get("mode", CHANGE_CAPTURE_MODES[0])
    if mode in _NO_MODIFIER_MODES:
        if capture.given("writer_accounts"):
            capture.error("writer_accounts", f"{mode} cannot tell who made a change; idsync's own entries are "
                                             "recognised by their idsyncAnchor marker instead")
        return ()
    for i, dn in enumerate(accounts):
        problem = _dn_problem(dn) if isinstance(dn, str) else f"expected a DN, got {kind_of(dn)}"
        if problem:
            capture.error(f"writer_accounts[{i}]", problem)
    return tuple(dn for dn in accounts if isinstance(dn, str))


def ldap_filter_problem(value: str) -> str | None:
    """Why `value` is not an RFC 4515 filter that idsync can combine with its own, or None."""
    text = value.strip()
    if not (text.startswith("(") and text.endswith(")")):
        return f"must be enclosed in parentheses, e.g. (employeeType=staff); got {value!r}"
    if text.count("(") != text.count(")"):
        return (f"unbalanced parentheses ({text.count('(')} '(' and {text.count(')')} ')'; a parenthesis "
                f"inside a value is written \\28 or \\29): {value!r}")
    if (bad := _BAD_FILTER_ESCAPE.search(text)) is not None:
        return f"'\\' must be followed by two hex digits (RFC 4515), at position {bad.start()}: {value!r}"
    try:
        root = parse_filter(text, None, False, False, None, False)
        compile_filter(root.elements[0])
    except LDAPInvalidFilterError as error:
        return f"not a valid LDAP filter ({error}): {value!r}"
    for node in _filter_assertions(root):
        attribute, rule = node.assertion.get("attr"), node.assertion.get("matchingRule")
        if not attribute and not rule:
            return f"an assertion names no attribute: {value!r}"
        for name in (attribute, rule):
            if name and not _ATTRIBUTE_DESCRIPTION.fullmatch(name):
                return f"{name!r} is not an attribute name or OID: {value!r}"
    return None


def _filter_assertions(node: Any) -> Iterator[Any]:
    if node.assertion is not None:
        yield node
    for element in node.elements:
        yield from _filter_assertions(element)


def _rdns(dn: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    """A DN in comparable form: RDNs, each a sorted tuple of case-folded (type, value) pairs."""
    rdns: list[tuple[tuple[str, str], ...]] = []
    current: list[tuple[str, str]] = []
    for attribute, value, separator in parse_dn(dn, strip=True):
        current.append((attribute.lower(), value.lower()))
        if separator != "+":  # '+' joins the parts of a multi-valued RDN
            rdns.append(tuple(sorted(current)))
            current = []
    return tuple(rdns)


_FOREST_NAME = rule(re.compile(r"[a-z][a-z0-9-]{0,62}").fullmatch,
                    "must be 1-63 lowercase letters, digits or '-', starting with a letter")
_ATTRIBUTE_DESCRIPTION = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+)(?:;[A-Za-z0-9-]+)*")
_BAD_FILTER_ESCAPE = re.compile(r"\\(?![0-9A-Fa-f]{2})")
# These modes' sources do not name the account that made a change.
_NO_MODIFIER_MODES = ("ad-dirsync", "ad-usn-poll")


def _dn_problem(value: str) -> str | None:
    try:
        parse_dn(value, strip=True)
    except LDAPInvalidDnError as error:
        return f"not a valid DN ({error}): {value!r}"
    return None


def _url_problem(value: str) -> str | None:
    url = urlsplit(value)
    if "@" in url.netloc:
        return "must not contain credentials; use password_env or password_file"
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme not in ("ldap", "ldaps") or not url.hostname or port is None:
        return f"expected ldap://host:port or ldaps://host:port, got {value!r}"
    if url.path not in ("", "/") or url.query or url.fragment:
        return f"must not have a path or query (the base DN goes in base_dn), got {value!r}"
    return None
