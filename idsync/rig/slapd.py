"""An OpenLDAP slapd forest (one suffix, its change log in cn=accesslog) for tests and demos."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from string import Template
from types import TracebackType
from typing import Any, ContextManager

import ldap3
from ldap3.core.exceptions import LDAPException

from idsync.rig.admin import admin_connection
from idsync.rig.errors import RigError
from idsync.rig.pki import Certificate
from idsync.rig.ports import accepts_connections, free_port, require_free_port
from idsync.rig.process import ManagedProcess

logger = logging.getLogger(__name__)

_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docker" / "slapd"
_CONF_TEMPLATE = _SCHEMA_DIR / "slapd.conf.template"
# Root may lack /usr/sbin on PATH under sudo or cron.
_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _ssha(password: str) -> str:
    """RFC 2307 {SSHA} hash, so the rendered slapd.conf holds no plaintext password."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _slapd() -> str:
    slapd = shutil.which("slapd", path=_SBIN_PATH)
    if slapd is None:
        raise RigError("no `slapd` binary found: run `bash docker/bootstrap.sh` from the repo root")
    return slapd


class SlapdInstance:
    """One forest: its files live in workdir/name; stop() then start() keeps its entries.

    With `tls` (a certificate of the rig's test CA) it serves StartTLS on its ldap:// port and
    TLS from the first byte on an ldaps:// port too; with `demand_client_certificate` as well, it
    refuses every TLS client without a certificate of that CA (slapd's `TLSVerifyClient demand`).
    `log_level` is slapd's debug level for its log file: "stats" logs every connection and operation
    (who bound where), "none" only errors.
    """

    def __init__(
        self, workdir: Path, *, name: str, suffix: str, port: int | None = None, admin_password: str,
        tls: Certificate | None = None, demand_client_certificate: bool = False, log_level: str = "none",
    ) -> None:
        if demand_client_certificate and tls is None:
            raise ValueError("demand_client_certificate needs tls: a server certificate and its CA")
        rdn_type, _, rdn_value = suffix.split(",", 1)[0].partition("=")
        if rdn_type.strip().lower() != "dc" or not rdn_value:
            raise ValueError(f"suffix must start with a dc= component, got {suffix!r}")
        self.name = name
        self.suffix = suffix
        self.home = Path(workdir) / name
        self.port = port if port is not None else free_port()
        self.admin_dn = f"cn=admin,{suffix}"
        self.admin_password = admin_password
        self._base_dc = rdn_value.strip()
        self._process: ManagedProcess | None = None
        self.tls = tls
        self.demand_client_certificate = demand_client_certificate
        self.ldaps_port = free_port() if tls is not None else None
        self._log_level = log_level

    def __repr__(self) -> str:
        return f"SlapdInstance(name={self.name!r}, suffix={self.suffix!r}, url={self.url!r})"

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        if self.ldaps_port is None:
            raise RigError(f"slapd {self.name} has no TLS certificate, so no ldaps:// port")
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.running else None

    @property
    def log_file(self) -> Path:
        return self.home / "slapd.log"

    def admin_connection(self, **connection_options: Any) -> ContextManager[ldap3.Connection]:
        """A connection bound as the admin DN, unbound (socket closed) on leaving the block."""
        return admin_connection(
            self.url, self.admin_dn, self.admin_password, server_name=f"slapd {self.name}", **connection_options
        )

    def start(self, timeout: float = 15) -> SlapdInstance:
        if self._process is not None and self._process.running:
            return self
        started = time.monotonic()
        slapd = _slapd()
        require_free_port(self.port, f"slapd {self.name}")
        listeners = [f"{self.url}/"]
        if self.ldaps_port is not None:
            require_free_port(self.ldaps_port, f"slapd {self.name}")
            listeners.append(f"{self.ldaps_url}/")
        conf = self._write_conf()
        # -d keeps slapd in the foreground (no fork), so the pid we hold is the server's and
        # PDEATHSIG reaches it; level "none" logs only errors, such as a failed bind of the port.
        self._process = ManagedProcess(
            f"slapd-{self.name}",
            [slapd, "-f", str(conf), "-h", " ".join(listeners), "-d", self._log_level],
            log_path=self.log_file,
        )
        self._process.start()
        try:
            self._wait_until_bindable(self._process, started + timeout)
            self._ensure_base_entry()
        except BaseException:
            self._process.kill()
            raise
        logger.info(
            "slapd ready name=%s url=%s suffix=%s pid=%d seconds=%.3f",
            self.name,
            self.url,
            self.suffix,
            self._process.pid,
            time.monotonic() - started,
        )
        return self

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, SIGKILL after timeout. Idempotent."""
        if self._process is not None and self._process.running:
            self._process.stop(timeout)
            logger.info("slapd stopped name=%s url=%s", self.name, self.url)

    def kill(self) -> None:
        if self._process is not None and self._process.running:
            self._process.kill()
            logger.info("slapd killed name=%s url=%s", self.name, self.url)

    def backup(self, target: Path) -> Path:
        """Both databases as LDIF files in `target` (slapcat; works while slapd runs)."""
        target.mkdir(parents=True, exist_ok=True)
        for suffix, _ in self._databases():
            self._run_tool("slapcat", suffix, target / f"{suffix}.ldif")
        return target

    def restore(self, backup: Path) -> None:
        """Replace both databases by those of `backup` (slapadd into emptied data dirs), as after
        losing the disk; slapd must be stopped."""
        if self.pid is not None:
            raise RigError(f"slapd {self.name}: stop it before restoring a backup")
        for suffix, directory in self._databases():
            shutil.rmtree(directory)
            directory.mkdir()
            self._run_tool("slapadd", suffix, backup / f"{suffix}.ldif")
        logger.info("slapd restored name=%s backup=%s", self.name, backup)

    def _databases(self) -> tuple[tuple[str, Path], ...]:
        return (("cn=accesslog", self.home / "accesslog"), (self.suffix, self.home / "data"))

    def _run_tool(self, tool: str, suffix: str, ldif: Path) -> None:
        command = [shutil.which(tool, path=_SBIN_PATH) or tool, "-f", str(self.home / "slapd.conf"), "-b", suffix]
        done = subprocess.run([*command, "-l", str(ldif)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RigError(f"slapd {self.name}: {tool} of {suffix} failed: {done.stderr[-2000:]}")

    def __enter__(self) -> SlapdInstance:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _write_conf(self) -> Path:
        dirs = {key: self.home / key for key in ("run", "data", "accesslog")}
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        conf = self.home / "slapd.conf"
        conf.write_text(
            Template(_CONF_TEMPLATE.read_text()).substitute(
                schema_dir=_SCHEMA_DIR,
                run_dir=dirs["run"],
                data_dir=dirs["data"],
                accesslog_dir=dirs["accesslog"],
                suffix=self.suffix,
                admin_dn=self.admin_dn,
                admin_password_hash=_ssha(self.admin_password),
                tls_config=self._tls_config(),
            )
        )
        conf.chmod(0o600)
        return conf

    def _tls_config(self) -> str:
        if self.tls is None:
            return "# no TLS: plain LDAP only"
        return (f"TLSCACertificateFile {self.tls.ca}\nTLSCertificateFile {self.tls.cert}\n"
                f"TLSCertificateKeyFile {self.tls.key}\n"
                f"TLSVerifyClient {'demand' if self.demand_client_certificate else 'never'}")

    def _wait_until_bindable(self, process: ManagedProcess, deadline: float) -> None:
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not process.running:
                raise RigError(
                    f"slapd {self.name} exited with code {process.returncode} before it was ready; "
                    f"see {self.log_file}:\n{process.log_tail()}"
                )
            # A plain socket first: ldap3 leaks the socket of a refused connection.
            if accepts_connections(self.port):
                try:
                    with self.admin_connection():
                        return
                except LDAPException as exc:
                    last_error = exc
            time.sleep(0.01)
        raise RigError(f"slapd {self.name} not answering at {self.url} in time (last error: {last_error!r})")

    def _ensure_base_entry(self) -> None:
        with self.admin_connection() as conn:
            if conn.search(self.suffix, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["1.1"]):
                return
            if not conn.add(
                self.suffix, ["dcObject", "organization"], {"dc": self._base_dc, "o": self._base_dc}
            ):
                raise RigError(f"slapd {self.name}: cannot create base entry {self.suffix}: {conn.result}")
            logger.info("slapd base entry created name=%s suffix=%s", self.name, self.suffix)
