"""A SQL site store: SiteSource and SiteWriter over one database, plus the admin operations that
play the collaboration platform in tests and the demo (create a site, add or remove a member,
change a member's properties as the site would).

Every change to a membership list or a member's properties appends to the site's change log in
the same transaction, under the next token of that site (the site's row is locked first, so
tokens of one site are handed out in commit order). The log keeps the newest `retain_changes`
entries per site; a token older than what it keeps has expired.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from connectors.sites.engines import Engine, PostgresEngine, SqliteEngine, Transaction, warn_once
from connectors.sites.migrations import migrate
from streams.contracts import FullReadReason, NotAMember, PermanentError, SiteChangeBatch, SiteMember
from streams.site_events import MembershipOp, SiteMembershipChange

if TYPE_CHECKING:
    from streams.config.sites import SiteStoreSettings

logger = logging.getLogger(__name__)

DEFAULT_RETAIN_CHANGES = 10_000


def dump_properties(properties: Mapping[str, str]) -> str:
    """The stored form: a JSON object, keys sorted, so equal profiles are equal texts."""
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in properties.items()):
        raise PermanentError("site properties must be strings")
    return orjson.dumps(dict(properties), option=orjson.OPT_SORT_KEYS).decode()


def load_properties(text: str) -> dict[str, str]:
    """The stored form read back; a row that is not a JSON object of strings (edited by hand, a
    broken migration) is the site's problem, not the worker's: PermanentError, so the reader
    skips that site and says why while the others go on."""
    try:
        properties = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise PermanentError(f"stored member properties are not JSON: {exc}") from None
    if not isinstance(properties, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in properties.items()):
        raise PermanentError("stored member properties are not an object of strings")
    return properties


def property_changes(current: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, str]:
    """The wanted properties whose value differs from the current one."""
    return {name: value for name, value in wanted.items() if current.get(name) != value}


def token_text(number: int, stamp: str | None) -> str:
    """A token: the site's change counter and the time of the change it names. The time tells a
    store restored from a backup that went on past the counter (another change under that
    number) from the store the token was read from."""
    return f"{number}@{stamp}" if stamp else str(number)


def parse_token(token: str) -> tuple[int, str | None] | None:
    """(counter, time of its change) of a store token; a bare counter (no time) is one too."""
    number, separator, stamp = token.partition("@")
    if not (number.isascii() and number.isdigit()) or (separator and not stamp):
        return None
    return int(number), stamp or None


def token_counter(token: str) -> int | None:
    """The change counter of a store token (for people and tests: tokens are compared whole)."""
    parsed = parse_token(token)
    return parsed[0] if parsed else None


def classify_token(token: str | None, *, floor: int, newest: int, stamp_held: str | None = None) -> FullReadReason | None:
    """Whether changes can be read after `token`, given what the site's log keeps (after `floor`,
    up to `newest`, and `stamp_held`: the time of the change it holds under the token's counter);
    if not, why a full read is needed."""
    if token is None:
        return FullReadReason.NO_TOKEN
    parsed = parse_token(token)
    if parsed is None or parsed[0] < floor:
        return FullReadReason.EXPIRED
    number, stamp = parsed
    if number > newest or (stamp is not None and stamp_held is not None and stamp != stamp_held):
        return FullReadReason.RESTORED
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class SqlSiteStore:
    """Site collections in SQLite or PostgreSQL (see open_store). Thread-safe: calls are serialised
    on one connection. Raises RetriableError whenever the database cannot be reached."""

    def __init__(self, engine: Engine, *, retain_changes: int = DEFAULT_RETAIN_CHANGES) -> None:
        if retain_changes < 1:
            raise ValueError("retain_changes must be at least 1")
        self.engine = engine
        self.retain_changes = retain_changes
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqlSiteStore(engine={self.engine.name!r})"

    def migrate(self) -> list[int]:
        with self._lock:
            return migrate(self.engine)

    def _transaction(self, *, snapshot: bool = False) -> Any:
        return _Locked(self._lock, self.engine.transaction(snapshot=snapshot))

    # --- SiteSource ---------------------------------------------------------------------------

    def sites(self) -> list[str]:
        with self._transaction(snapshot=True) as tx:
            return [row[0] for row in tx.execute("SELECT site_id FROM sites ORDER BY site_id")]

    def changes(self, site: str, token: str | None, limit: int = 1000) -> SiteChangeBatch:
        with self._transaction(snapshot=True) as tx:
            newest, floor = _site_row(tx, site)
            parsed = parse_token(token) if token is not None else None
            held = _stamp(tx, site, parsed[0]) if parsed and parsed[1] else None
            reason = classify_token(token, floor=floor, newest=newest, stamp_held=held)
            if reason is not None or parsed is None:
                return SiteChangeBatch(site=site, changes=(), token=_newest_token(tx, site, newest),
                                       full_read_needed=reason)
            rows = tx.execute(
                "SELECT token, login, op, properties, changed_at FROM site_changes "
                "WHERE site_id = ? AND token > ? ORDER BY token LIMIT ?", (site, parsed[0], limit))
        changes = tuple(
            SiteMembershipChange(site=site, member_login=login, op=MembershipOp(op),
                                 change_token=token_text(number, changed_at), changed_at=changed_at,
                                 properties=load_properties(properties))
            for number, login, op, properties, changed_at in rows
        )
        return SiteChangeBatch(site=site, changes=changes, token=changes[-1].change_token if changes else str(token))

    def members(self, site: str) -> tuple[list[SiteMember], str]:
        with self._transaction(snapshot=True) as tx:
            newest, _ = _site_row(tx, site)
            rows = tx.execute("SELECT login, person, properties FROM site_members WHERE site_id = ? ORDER BY login",
                              (site,))
            token = _newest_token(tx, site, newest)
        return [SiteMember(login=login, person=person, properties=load_properties(properties))
                for login, person, properties in rows], token

    # --- SiteWriter ---------------------------------------------------------------------------

    def write_properties(self, site: str, login: str, properties: Mapping[str, str]) -> dict[str, str]:
        """Set the given properties on the member's entry; logged as a properties change when any
        value differs. Only members' entries are written: an unknown member is NotAMember."""
        dump_properties(properties)
        with self._transaction() as tx:
            current = _locked_member(tx, site, login)
            if current is None:
                raise NotAMember(f"site {site!r} has no member {login!r}")
            changed = property_changes(current, properties)
            if changed:
                _save_member(tx, site, login, current | changed, self.retain_changes)
        return changed

    def set_person(self, site: str, login: str, person: str | None) -> None:
        """Record which metaverse person a member resolves to (idsync's note, not a site change:
        nothing is logged)."""
        with self._transaction() as tx:
            if not tx.rowcount("UPDATE site_members SET person = ? WHERE site_id = ? AND login = ?",
                               (person, site, login)):
                raise PermanentError(f"site {site!r} has no member {login!r}")

    # --- Admin: the platform's own operations -----------------------------------------------

    def create_site(self, site: str, title: str = "") -> None:
        with self._transaction() as tx:
            if tx.execute("SELECT 1 FROM sites WHERE site_id = ?", (site,)):
                raise PermanentError(f"site {site!r} exists already")
            tx.execute("INSERT INTO sites (site_id, title, last_token, log_floor, created_at) VALUES (?, ?, 0, 0, ?)",
                       (site, title or site, _now()))

    def add_member(self, site: str, login: str, properties: Mapping[str, str] | None = None) -> bool:
        """Add a member with the properties the site starts with; False when already a member."""
        text = dump_properties(properties or {})
        with self._transaction() as tx:
            if _locked_member(tx, site, login) is not None:
                return False
            tx.execute("INSERT INTO site_members (site_id, login, person, properties) VALUES (?, ?, NULL, ?)",
                       (site, login, text))
            _log(tx, site, login, MembershipOp.ADDED, text, self.retain_changes)
        return True

    def remove_member(self, site: str, login: str) -> bool:
        """False when not a member."""
        with self._transaction() as tx:
            if _locked_member(tx, site, login) is None:
                return False
            tx.execute("DELETE FROM site_members WHERE site_id = ? AND login = ?", (site, login))
            _log(tx, site, login, MembershipOp.REMOVED, "{}", self.retain_changes)
        return True

    def change_properties(self, site: str, login: str, properties: Mapping[str, str]) -> dict[str, str]:
        """A change made on the site itself (a member editing their entry): as write_properties."""
        return self.write_properties(site, login, properties)

    def close(self) -> None:
        with self._lock:
            self.engine.close()


class _Locked:
    """The store's lock held for the length of one transaction."""

    def __init__(self, lock: threading.Lock, transaction: Any) -> None:
        self._lock = lock
        self._transaction = transaction

    def __enter__(self) -> Transaction:
        self._lock.acquire()
        try:
            return self._transaction.__enter__()
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, *exc_info: Any) -> bool | None:
        try:
            return self._transaction.__exit__(*exc_info)
        finally:
            self._lock.release()


def _site_row(tx: Transaction, site: str) -> tuple[int, int]:
    rows = tx.execute("SELECT last_token, log_floor FROM sites WHERE site_id = ?", (site,))
    if not rows:
        raise PermanentError(f"no site {site!r} in the store")
    return int(rows[0][0]), int(rows[0][1])


def _stamp(tx: Transaction, site: str, number: int) -> str | None:
    """The time of the change the site's log holds under `number` (None: none, or pruned)."""
    rows = tx.execute("SELECT changed_at FROM site_changes WHERE site_id = ? AND token = ?", (site, number))
    return rows[0][0] if rows else None


def _newest_token(tx: Transaction, site: str, newest: int) -> str:
    return token_text(newest, _stamp(tx, site, newest) if newest else None)


def _locked_member(tx: Transaction, site: str, login: str) -> dict[str, str] | None:
    """The member's properties, after locking the site's row against other writers."""
    if not tx.rowcount("UPDATE sites SET last_token = last_token WHERE site_id = ?", (site,)):
        raise PermanentError(f"no site {site!r} in the store")
    rows = tx.execute("SELECT properties FROM site_members WHERE site_id = ? AND login = ?", (site, login))
    return load_properties(rows[0][0]) if rows else None


def _save_member(tx: Transaction, site: str, login: str, properties: Mapping[str, str], retain: int) -> None:
    text = dump_properties(properties)
    tx.execute("UPDATE site_members SET properties = ? WHERE site_id = ? AND login = ?", (text, site, login))
    _log(tx, site, login, MembershipOp.PROPERTIES_CHANGED, text, retain)


def _log(tx: Transaction, site: str, login: str, op: MembershipOp, properties: str, retain: int) -> int:
    """Append to the site's change log under its next token; prune what the retention drops."""
    token = int(tx.execute("UPDATE sites SET last_token = last_token + 1 WHERE site_id = ? RETURNING last_token",
                           (site,))[0][0])
    tx.execute("INSERT INTO site_changes (site_id, token, login, op, properties, changed_at) VALUES (?, ?, ?, ?, ?, ?)",
               (site, token, login, op.value, properties, _now()))
    floor = token - retain
    if floor > 0:
        tx.execute("DELETE FROM site_changes WHERE site_id = ? AND token <= ?", (site, floor))
        tx.execute("UPDATE sites SET log_floor = ? WHERE site_id = ? AND log_floor < ?", (floor, site, floor))
    return token


def open_store(location: str | Path, *, retain_changes: int = DEFAULT_RETAIN_CHANGES,
               create: bool = False) -> SqlSiteStore:
    """A store at `location`: a `postgresql://` conninfo URL, or a SQLite file path (optionally
    `sqlite:///path`). With `create`, a missing SQLite file is made; either way the schema is
    migrated to the newest version."""
    text = str(location)
    engine: SqliteEngine | PostgresEngine
    if text.startswith(("postgresql://", "postgres://")):
        engine = PostgresEngine(text)
    else:
        engine = SqliteEngine(Path(text.removeprefix("sqlite://")))
        if create:
            engine.create()
    store = SqlSiteStore(engine, retain_changes=retain_changes)
    store.migrate()
    return store


def open_site_store(settings: SiteStoreSettings, *, retain_changes: int = DEFAULT_RETAIN_CHANGES) -> SqlSiteStore:
    """The store a topology's `sites.stores[]` entry names, migrated to the newest schema. A
    PostgreSQL password (password_env / password_file) is read at each connect, never kept. The
    SQLite file must exist already: a missing file is a store that is down (RetriableError), not
    a new empty one. Raises RetriableError when the database cannot be reached, NeedsAttention
    when its TLS certificate is refused (or it offers no TLS)."""
    engine: SqliteEngine | PostgresEngine
    if settings.engine == "postgresql":
        password = settings.password
        warn_once(settings.name, settings.location, settings.tls)
        engine = PostgresEngine(settings.location, password=password.reveal if password is not None else None,
                                tls=settings.tls, store=settings.name)
    else:
        engine = SqliteEngine(Path(settings.location))
    store = SqlSiteStore(engine, retain_changes=retain_changes)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store
