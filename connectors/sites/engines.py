"""The two SQL engines a site store runs on, behind one small interface.

Blocking DB-API drivers (stdlib sqlite3, psycopg 3's sync API): sqlite3 has no async API, so one
blocking implementation serves both engines, and the core runs it in worker threads, as it does
for ContactWriter. Statements use `?` placeholders; PostgreSQL gets them as `%s`.

A PostgreSQL connection is protected as the store's `tls` settings say (streams/config/security.py),
handed to libpq as keyword parameters: sslmode=verify-full against the CA file, or the system's CA
bundle as Python's ssl module finds it (SSL_CERT_FILE, else OpenSSL's default file). libpq's own
`sslrootcert=system` is not used: psycopg's binary wheel bundles an OpenSSL whose default
directory is its own, not the system's. A certificate refused (or no TLS offered) is NeedsAttention:
only a person can mend it, and the password was not sent.
"""

from __future__ import annotations

import logging
import sqlite3
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from streams.config.security import PostgresTls
from streams.contracts import NeedsAttention, RetriableError

log = logging.getLogger(__name__)

Row = tuple[Any, ...]


class Transaction(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int: ...


class Engine(Protocol):
    name: str
    # Run first in each migration transaction: holds other processes' migrations off until commit.
    schema_lock_sql: str | None

    def transaction(self, *, snapshot: bool = False) -> Any:
        """A context manager yielding a Transaction: committed on exit, rolled back on error.
        With `snapshot`, every read sees one moment. Raises RetriableError when the database
        cannot be reached."""

    def close(self) -> None: ...


class _Cursor:
    def __init__(self, cursor: Any, placeholder: str) -> None:
        self._cursor = cursor
        self._placeholder = placeholder

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cursor.execute(sql.replace("?", self._placeholder), tuple(params))
        return [tuple(row) for row in self._cursor.fetchall()] if self._cursor.description else []

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cursor.execute(sql.replace("?", self._placeholder), tuple(params))
        return int(self._cursor.rowcount)


class SqliteEngine:
    """A database file. Writers take the write lock at BEGIN (IMMEDIATE), so a read-modify-write
    of a member never interleaves with another writer's."""

    name = "sqlite"
    # BEGIN IMMEDIATE holds the database's write lock already.
    schema_lock_sql = None

    def __init__(self, path: Path | str, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            # mode=rw: a missing file is an unavailable store, not a new empty one (create() makes it).
            conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=self._busy_timeout,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA foreign_keys = ON")
            self._conn = conn
        return self._conn

    def create(self) -> None:
        """Make the database file if it does not exist yet."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sqlite3.connect(self.path).close()

    @contextmanager
    def transaction(self, *, snapshot: bool = False) -> Iterator[Transaction]:
        try:
            conn = self._connect()
            cursor = conn.cursor()
            # A deferred BEGIN reads from one snapshot; IMMEDIATE also holds the write lock.
            cursor.execute("BEGIN" if snapshot else "BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self.close()
            raise RetriableError(f"sqlite site store {self.path}: {exc}") from exc
        try:
            yield _Cursor(cursor, "?")
            cursor.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise RetriableError(f"sqlite site store {self.path}: {exc}") from exc
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresEngine:
    """A PostgreSQL database through psycopg 3, one autocommit connection with explicit
    transactions, reopened after the server went away. Read committed by default; writers lock
    the site's row first, so changes of one site are serialised."""

    name = "postgresql"
    # Two workers starting at once would both create the tables: one waits for the other's commit.
    schema_lock_sql = "SELECT pg_advisory_xact_lock(7361820452)"

    def __init__(self, conninfo: str, *, connect_timeout: int = 5,
                 password: Callable[[], str] | None = None, tls: PostgresTls | None = None,
                 store: str | None = None) -> None:
        """`password` is called at each (re)connect, so a rotated secret applies to the next
        connection; the conninfo itself never holds one (topology.yaml forbids it). `tls`: the
        store's settings (None: libpq's defaults, for the rig's admin connections); `store`: the
        store's name, for messages."""
        self.conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._password = password
        self._tls = tls
        self._subject = f"postgresql site store {store}" if store else "postgresql site store"
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            extra = {} if self._tls is None else libpq_tls(self._tls, self._subject)
            if self._password is not None:
                extra["password"] = self._read_password()
            try:
                self._conn = psycopg.connect(self.conninfo, autocommit=True,
                                             connect_timeout=self._connect_timeout, **extra)
            except psycopg.OperationalError as exc:
                if (refusal := tls_refusal(exc)) is not None:
                    raise NeedsAttention(f"{self._subject}: {refusal} (sslmode={extra.get('sslmode')}): "
                                         f"{_first_line(exc)}; the password was not sent") from None
                raise
        return self._conn

    def _read_password(self) -> str:
        assert self._password is not None
        try:
            return self._password()
        except Exception as exc:
            # A secret that went missing is waited out like a server that went away; the message
            # names where the secret is looked for, never its value.
            raise RetriableError(f"{self._subject}: password unavailable: {exc}") from None

    def create(self) -> None:
        """The database must exist already: a PostgreSQL database is created by its administrator."""

    @contextmanager
    def transaction(self, *, snapshot: bool = False) -> Iterator[Transaction]:
        import psycopg

        try:
            conn = self._connect()
            with conn.transaction(), conn.cursor() as cursor:
                if snapshot:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                yield _Cursor(cursor, "%s")
        except (psycopg.OperationalError, psycopg.errors.SerializationFailure,
                psycopg.errors.DeadlockDetected) as exc:
            if self._conn is not None and self._conn.closed:
                self._conn = None
            elif isinstance(exc, psycopg.OperationalError):
                self.close()
            raise RetriableError(f"{self._subject}: {type(exc).__name__}: {_first_line(exc)}") from exc

    def backend_pid(self) -> int | None:
        """The server process serving this store's connection (tests use it to cut the link)."""
        return None if self._conn is None or self._conn.closed else int(self._conn.info.backend_pid)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _first_line(exc: BaseException) -> str:
    # psycopg's connection errors carry the conninfo's host/port but never its password.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


_VERSIONS = {"1.2": "TLSv1.2", "1.3": "TLSv1.3"}
# What libpq says when TLS is refused for a reason only a person can mend (not an outage).
_REFUSALS = (
    ("certificate verify failed", "certificate not accepted"),
    ("does not match host name", "certificate not for this host"),
    ("server does not support SSL", "the server offers no TLS"),
    ("root certificate file", "CA file not usable"),
    ("certificate file", "client certificate not usable"),
    ("private key file", "client key not usable"),
    ("no protocols available", "no common TLS version"),
    ("unsupported protocol", "no common TLS version"),
    ("alert protocol version", "no common TLS version"),
    ("certificate required", "the server asks for a client certificate"),
    # pg_hba's clientcert: checked before the password is asked for.
    ("requires a valid client certificate", "the server asks for a client certificate"),
)


def libpq_tls(tls: PostgresTls, subject: str = "postgresql site store") -> dict[str, str]:
    """libpq's connection parameters for `tls` (files are read by libpq at each connect)."""
    if not tls.required:
        return {"sslmode": "prefer"}
    params = {"sslmode": "verify-full" if tls.verify else "require",
              "ssl_min_protocol_version": _VERSIONS[tls.min_version]}
    if tls.verify:
        params["sslrootcert"] = str(tls.files.ca_file or system_ca_file(subject))
    if tls.files.cert_file is not None:
        params["sslcert"] = str(tls.files.cert_file)
        params["sslkey"] = str(tls.files.key_file or tls.files.cert_file)
    return params


def system_ca_file(subject: str = "postgresql site store") -> str:
    """The system's CA bundle, as Python's ssl module finds it."""
    paths = ssl.get_default_verify_paths()
    found = paths.cafile or (paths.openssl_cafile if Path(paths.openssl_cafile).is_file() else None)
    if found is None:
        raise NeedsAttention(f"{subject}: no system CA bundle (looked for {paths.openssl_cafile} and "
                             f"${paths.openssl_cafile_env}); set tls.ca_file")
    return found


def tls_refusal(exc: BaseException) -> str | None:
    """What a connection failure says about TLS, when TLS refused it; None for other failures."""
    text = str(exc)
    return next((what for marker, what in _REFUSALS if marker in text), None)


# Stores warned about in this process: once per start, not once per connection.
_warned: set[str] = set()


def warn_once(store: str, location: str, tls: PostgresTls) -> None:
    """At a store's first open in this process: a WARNING when its server is not verified."""
    if store in _warned or not tls.required or tls.verify:
        return
    _warned.add(store)
    log.warning("postgresql certificate NOT verified store=%s url=%s (tls.verify: false): the connection is "
                "encrypted, but anyone on the path can pose as the server and receive the password",
                store, location)
