"""Person sync's part of topology.yaml (seed 004): the ``sites:`` section.

    sites:
      stores:                      # the collaboration platforms holding site collections
        - name: intranet
          url: sqlite:///var/lib/idsync/sites.db    # or postgresql://idsync@db.example:5432/sites
          password_env: IDSYNC_SITES_PASSWORD       # PostgreSQL only, optional
          tls:                                      # PostgreSQL only (streams/config/security.py)
            ca_file: /etc/idsync/sites-ca.pem       # default: the system's CA bundle
          poll_interval_seconds: 1.0
      logins:                      # how a member's login finds its metaverse person, tried in turn
        - "{userPrincipalName}"
        - "{mail}"
        - {template: "ALPHA\\\\{sAMAccountName}", forests: [forest-a]}
      replicate:                   # metaverse attribute -> site property, written down to sites
        displayName: Title
        title: JobTitle

A login rule is an attribute template (streams/rules/templates.py) rendered against each source
object of the person, optionally only those of some forests (a NetBIOS domain belongs to one).
Without a ``sites:`` section there is no person sync: nothing is read, claimed or written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from streams.config.sections import ATTRIBUTE, NOT_EMPTY, Section, rule
from streams.config.security import PostgresTls, Secret, postgres_tls, secret
from streams.rules.profiles import LoginRule, ProfilePolicy
from streams.rules.templates import Template, TemplateError

SITES_KEYS = ("stores", "logins", "replicate")
STORE_KEYS = ("name", "url", "password_env", "password_file", "poll_interval_seconds", "tls")
DEFAULT_LOGINS = ("{userPrincipalName}", "{mail}")
# SharePoint's user information list names, for the properties of issue #10.
DEFAULT_REPLICATE = {
    "displayName": "Title",
    "mail": "EMail",
    "title": "JobTitle",
    "department": "Department",
    "telephoneNumber": "WorkPhone",
    "msRTCSIP-PrimaryUserAddress": "SipAddress",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteStoreSettings:
    name: str
    # A SQLite file (absolute, or relative to the topology file) or a postgresql:// URL.
    location: str
    password: Secret | None
    poll_interval_seconds: float
    # PostgreSQL only: how the connection is encrypted and the server verified.
    tls: PostgresTls = PostgresTls()

    @property
    def engine(self) -> str:
        return "postgresql" if self.location.startswith(("postgresql://", "postgres://")) else "sqlite"


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteSettings:
    stores: tuple[SiteStoreSettings, ...]
    policy: ProfilePolicy

    def store(self, name: str) -> SiteStoreSettings:
        for store in self.stores:
            if store.name == name:
                return store
        raise KeyError(f"no site store named {name!r} in the topology (it has: "
                       f"{', '.join(s.name for s in self.stores)})")


def sites(sec: Section, base_dir: Path | None, forests: tuple[str, ...]) -> SiteSettings:
    return SiteSettings(
        stores=_stores(sec, base_dir),
        policy=ProfilePolicy(logins=_logins(sec, forests), replicate=_replicate(sec)),
    )


def _stores(sec: Section, base_dir: Path | None) -> tuple[SiteStoreSettings, ...]:
    items = sec.value("stores", (list,), "a list of site stores") or []
    if not items and not sec.broken:
        sec.error("stores", "must list at least one site store")
    stores: list[SiteStoreSettings] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        store = Section(sec.errors, item, f"{sec.at('stores')}[{i}]", STORE_KEYS)
        name = store.text("name", check=_STORE_NAME)
        url = store.text("url", check=NOT_EMPTY)
        if name is not None and (first := seen.setdefault(name, i)) != i:
            store.error("name", f"{name!r} is the name of {sec.at('stores')}[{first}] already")
        postgres = url is not None and url.startswith(("postgresql://", "postgres://"))
        password = None
        if store.given("password_env") or store.given("password_file"):
            if postgres:
                password = secret(store, base_dir)
            else:
                store.error("password_env" if store.given("password_env") else "password_file",
                            "only a postgresql:// store takes a password; a SQLite file is protected by its permissions")
        if url is not None and postgres and re.match(r"postgres(?:ql)?://[^/@]*:[^/@]*@", url):
            store.error("url", "must not hold a password; use password_env or password_file")
        tls = PostgresTls()
        if url is not None and postgres:
            tls = postgres_tls(store, base_dir, url)
        elif store.given("tls"):
            store.error("tls", "only a postgresql:// store takes tls settings; a SQLite file is not a connection")
        if name is None or url is None:
            continue
        location = url if postgres else _sqlite_path(url, base_dir)
        stores.append(SiteStoreSettings(
            name=name, location=location, password=password,
            poll_interval_seconds=store.number("poll_interval_seconds", 1.0, minimum=0, inclusive=False,
                                               maximum=3600),
            tls=tls,
        ))
    return tuple(stores)


def _sqlite_path(url: str, base_dir: Path | None) -> str:
    path = Path(url.removeprefix("sqlite://"))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


def _logins(sec: Section, forests: tuple[str, ...]) -> tuple[LoginRule, ...]:
    items = sec.value("logins", (list,), "a list of login templates", list(DEFAULT_LOGINS))
    if items == [] and not sec.broken:
        sec.error("logins", "must list at least one rule; without one no member resolves to a person")
    rules: list[LoginRule] = []
    for i, item in enumerate(items or []):
        path = f"{sec.at('logins')}[{i}]"
        if isinstance(item, str):
            item = {"template": item}
        entry = Section(sec.errors, item, path, ("template", "forests"))
        template = _template(entry, "template")
        only = entry.value("forests", (list,), "a list of forest names", None)
        for j, forest in enumerate(only or []):
            if forest not in forests:
                entry.error(f"forests[{j}]", f"no forest named {forest!r} (known: {', '.join(forests)})")
        if template is not None:
            rules.append(LoginRule(template=template, forests=frozenset(only) if only else None))
    return tuple(rules)


def _replicate(sec: Section) -> tuple[tuple[str, str], ...]:
    mapping = sec.value("replicate", (dict,), "a mapping of metaverse attribute to site property", DEFAULT_REPLICATE)
    if mapping == {} and not sec.broken:
        sec.error("replicate", "must name at least one property; without one nothing flows down to sites")
    pairs: list[tuple[str, str]] = []
    owners: dict[str, str] = {}
    for attribute, prop in (mapping or {}).items():
        where = f"replicate.{attribute}"
        if not isinstance(attribute, str) or ATTRIBUTE(attribute):
            sec.errors.append(f"{sec.at(where)}: not an LDAP attribute name (a letter, then letters, digits or hyphens)")
            continue
        if not isinstance(prop, str) or not _PROPERTY.fullmatch(prop):
            sec.errors.append(f"{sec.at(where)}: expected a site property name (letters, digits, '_', '-' or '.'), "
                              f"got {prop!r}")
            continue
        if (other := owners.setdefault(prop.casefold(), attribute)) != attribute:
            sec.errors.append(f"{sec.at(where)}: site property {prop!r} is written from {other!r} already")
            continue
        pairs.append((attribute, prop))
    return tuple(pairs)


def _template(sec: Section, key: str) -> Template | None:
    text = sec.text(key)
    if text is None:
        return None
    try:
        template = Template.parse(text)
    except TemplateError as error:
        sec.error(key, str(error))
        return None
    if not template.placeholders:
        sec.error(key, "needs a placeholder such as '{userPrincipalName}': a constant would be everyone's login")
        return None
    return template


_STORE_NAME = rule(re.compile(r"[a-z0-9][a-z0-9-]*").fullmatch, "must be lowercase letters, digits and '-'")
_PROPERTY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
