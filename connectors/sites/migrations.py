"""The store's schema: the numbered SQL files in migrations/, applied in order, each in its own
transaction with its row in schema_version, so a store is brought up to date by running them
again. A file `NNNN_name.<engine>.sql` is used by that engine only, instead of `NNNN_name.sql`."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from connectors.sites.engines import Engine, Transaction

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<engine>sqlite|postgresql))?\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path

    def statements(self) -> list[str]:
        """The file's statements: comments dropped, split at semicolons that end a line."""
        text = "\n".join(line for line in self.path.read_text().splitlines() if not line.lstrip().startswith("--"))
        return [statement.strip() for statement in re.split(r";\s*$", text, flags=re.M) if statement.strip()]


def migrations_for(engine: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations an engine runs, in order; an engine-specific file wins over the shared one."""
    chosen: dict[int, tuple[bool, Migration]] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path}: not a migration file name (NNNN_name.sql or NNNN_name.<engine>.sql)")
        if match["engine"] not in (None, engine):
            continue
        version = int(match["version"])
        specific = match["engine"] is not None
        if version in chosen and chosen[version][0] == specific:
            raise ValueError(f"{path}: two migrations numbered {version:04d}")
        if version not in chosen or specific:
            chosen[version] = (specific, Migration(version, match["name"], path))
    return [migration for _, (_, migration) in sorted(chosen.items())]


def migrate(engine: Engine, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the migrations the database has not had yet; the versions applied now."""
    with engine.transaction() as tx:
        _lock(engine, tx)
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                   "applied_at TEXT NOT NULL)")
    applied: list[int] = []
    for migration in migrations_for(engine.name, directory):
        with engine.transaction() as tx:
            _lock(engine, tx)
            if tx.execute("SELECT 1 FROM schema_version WHERE version = ?", (migration.version,)):
                continue
            for statement in migration.statements():
                tx.execute(statement)
            tx.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                       (migration.version, migration.name, datetime.now(UTC).isoformat()))
        logger.info("site store migrated engine=%s version=%04d name=%s",
                    engine.name, migration.version, migration.name)
        applied.append(migration.version)
    return applied


def _lock(engine: Engine, tx: Transaction) -> None:
    if engine.schema_lock_sql:
        tx.execute(engine.schema_lock_sql)
