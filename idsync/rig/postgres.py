"""A PostgreSQL server (Debian's `postgresql` package) as a plain process, for the site stores of
tests and demos: its own data directory, port and socket directory; one database and one user
for idsync, password-authenticated over TCP on 127.0.0.1.

initdb and postgres refuse to run as root: as root, both run as the `postgres` system user (through
runuser), and the data directory is a private directory of that user under the system's temp dir
(pytest's own temp directories are closed to other users).

With `tls` (a certificate of the rig's test CA) the server also speaks TLS (ssl=on, plain
connections still accepted): its certificate and key are copied into the cluster's home, owned by
the service user, the key with mode 0600, as postgres demands. With `demand_client_certificate`
as well, `user` may only log in over TLS with a client certificate of that CA whose CN is its name
(pg_hba's `clientcert=verify-full`), before its password is asked for; the superuser the rig
uses itself is not affected.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from idsync.rig.errors import RigError
from idsync.rig.pki import Certificate
from idsync.rig.ports import accepts_connections, free_port, require_free_port
from idsync.rig.process import ManagedProcess

logger = logging.getLogger(__name__)

PG_BIN = Path(os.environ.get("IDSYNC_PG_BIN", "/usr/lib/postgresql/15/bin"))
_SERVICE_USER = "postgres"


class PostgresServer:
    """One cluster; `conninfo` reaches its `database` as `user`. stop() removes the cluster."""

    def __init__(self, workdir: Path, *, name: str = "postgres", port: int | None = None,
                 database: str = "idsync", user: str = "idsync", tls: Certificate | None = None,
                 demand_client_certificate: bool = False) -> None:
        if demand_client_certificate and tls is None:
            raise ValueError("demand_client_certificate needs tls: a server certificate and its CA")
        self.name = name
        self.workdir = Path(workdir)
        self.port = port if port is not None else free_port()
        self.database = database
        self.user = user
        self.tls = tls
        self.demand_client_certificate = demand_client_certificate
        self.password = secrets.token_urlsafe(16)
        self._superuser_password = secrets.token_urlsafe(16)
        self._home: Path | None = None
        self._process: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"PostgresServer(name={self.name!r}, port={self.port}, tls={self.tls is not None})"

    @property
    def conninfo(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def superuser_conninfo(self) -> str:
        return f"postgresql://{_SERVICE_USER}:{self._superuser_password}@127.0.0.1:{self.port}/{self.database}"

    def create_database(self, name: str) -> str:
        """A new database owned by `user` (a test's own); its URL without the password, which
        is `password`, as a topology names it (the password comes from password_env)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._superuser_conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(self.user)))
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    @property
    def log_file(self) -> Path:
        return self.workdir / self.name / "postgres.log"

    def start(self, timeout: float = 30) -> PostgresServer:
        for tool in ("initdb", "postgres", "pg_ctl"):
            if not (PG_BIN / tool).exists():
                raise RigError(f"no {PG_BIN / tool}: run `bash docker/bootstrap.sh` (Debian's postgresql package)")
        require_free_port(self.port, f"postgres {self.name}")
        started = time.monotonic()
        if self._home is None:
            self._home = self._make_home()
            self._initdb()
        self._process = ManagedProcess(
            f"postgres-{self.name}",
            [*self._as_service_user(), str(PG_BIN / "postgres"), "-D", str(self._data_dir), "-p", str(self.port),
             "-k", str(self._home), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", *self._tls_options()],
            log_path=self.log_file,
        )
        self._process.start()
        self._wait_until_ready(started + timeout)
        self._create_database()
        logger.info("postgres started name=%s port=%d in %.2fs", self.name, self.port, time.monotonic() - started)
        return self

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (clients are disconnected), then the cluster's files are removed."""
        self._shutdown(timeout)
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def pause(self, timeout: float = 30) -> None:
        """Stop the server, keeping its cluster: start() brings the same databases back."""
        self._shutdown(timeout)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def _data_dir(self) -> Path:
        assert self._home is not None
        return self._home / "data"

    def _shutdown(self, timeout: float) -> None:
        if self._process is None:
            return
        if self._process.running:
            subprocess.run([*self._as_service_user(), str(PG_BIN / "pg_ctl"), "stop", "-D", str(self._data_dir),
                            "-m", "fast", "-t", str(int(timeout))], capture_output=True, check=False)
        self._process.stop(timeout)
        self._process = None

    def _as_service_user(self) -> list[str]:
        return ["runuser", "-u", _SERVICE_USER, "--"] if os.geteuid() == 0 else []

    def _make_home(self) -> Path:
        home = Path(tempfile.mkdtemp(prefix=f"idsync-pg-{self.name}-"))
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(_SERVICE_USER)
            except KeyError as exc:
                raise RigError(f"no `{_SERVICE_USER}` user: run `bash docker/bootstrap.sh`") from exc
            os.chown(home, account.pw_uid, account.pw_gid)
        return home

    def _tls_options(self) -> list[str]:
        if self.tls is None:
            return []
        assert self._home is not None
        cert, key, ca = self._home / "server.pem", self._home / "server.key", self._home / "ca.pem"
        shutil.copyfile(self.tls.cert, cert)
        shutil.copyfile(self.tls.key, key)
        shutil.copyfile(self.tls.ca, ca)
        key.chmod(0o600)
        if os.geteuid() == 0:
            account = pwd.getpwnam(_SERVICE_USER)
            for path in (cert, key, ca):
                os.chown(path, account.pw_uid, account.pw_gid)
        options = ["-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}"]
        if self.demand_client_certificate:
            options += ["-c", f"ssl_ca_file={ca}"]
        return options

    def _initdb(self) -> None:
        assert self._home is not None
        pwfile = self._home / "pwfile"
        pwfile.write_text(self._superuser_password + "\n")
        if os.geteuid() == 0:
            account = pwd.getpwnam(_SERVICE_USER)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        pwfile.chmod(0o600)
        try:
            result = subprocess.run(
                [*self._as_service_user(), str(PG_BIN / "initdb"), "-D", str(self._data_dir), "-U", _SERVICE_USER,
                 "--pwfile", str(pwfile), "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8",
                 "--locale=C.UTF-8", "--no-sync"],
                capture_output=True, text=True, check=False)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RigError(f"initdb failed for postgres {self.name}: {result.stderr.strip() or result.stdout.strip()}")
        if self.demand_client_certificate:
            # The first matching line wins: idsync's user over TLS with its certificate, or not at all.
            hba = self._data_dir / "pg_hba.conf"
            hba.write_text(f"hostssl all {self.user} 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n"
                           f"host all {self.user} 127.0.0.1/32 reject\n" + hba.read_text())

    def _wait_until_ready(self, deadline: float) -> None:
        assert self._process is not None
        while time.monotonic() < deadline:
            if not self._process.running:
                raise RigError(f"postgres {self.name} exited with {self._process.returncode}:\n"
                               f"{self._process.log_tail()}")
            if accepts_connections(self.port) and self._can_connect():
                return
            time.sleep(0.05)
        self._process.stop()
        raise RigError(f"postgres {self.name} not ready on port {self.port} in time:\n{self._process.log_tail()}")

    def _can_connect(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self._superuser_conninfo("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:  # still starting up
            return False
        return True

    def _superuser_conninfo(self, database: str) -> str:
        return f"postgresql://{_SERVICE_USER}:{self._superuser_password}@127.0.0.1:{self.port}/{database}"

    def _create_database(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._superuser_conninfo("postgres"), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)))
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.database), sql.Identifier(self.user)))
