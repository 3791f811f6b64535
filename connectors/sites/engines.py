"""The two SQL engines a site store runs on, behind one small interface.

Blocking DB-API drivers (stdlib sqlite3, psycopg 3's sync API): sqlite3 has no async API, so one
blocking implementation serves both engines, and the core runs it in worker threads, as it does
for ContactWriter. Statements use `?` placeholders; PostgreSQL gets them as `%s`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from streams.contracts import RetriableError

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
                 password: Callable[[], str] | None = None) -> None:
        """`password` is called at each (re)connect, so a rotated secret applies to the next
        connection; the conninfo itself never holds one (topology.yaml forbids it)."""
        self.conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._password = password
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            extra = {} if self._password is None else {"password": self._read_password()}
            self._conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=self._connect_timeout,
                                         **extra)
        return self._conn

    def _read_password(self) -> str:
        assert self._password is not None
        try:
            return self._password()
        except Exception as exc:
            # A secret that went missing is waited out like a server that went away; the message
            # names where the secret is looked for, never its value.
            raise RetriableError(f"postgresql site store: password unavailable: {exc}") from None

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
            raise RetriableError(f"postgresql site store: {type(exc).__name__}: {_first_line(exc)}") from exc

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
