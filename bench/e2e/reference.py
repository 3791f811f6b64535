"""The physical reference: one slapd that is a syncrepl refreshAndPersist consumer (a replica) of
the user forests, one mdb database per forest, each with syncprov so a watcher can follow it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from idsync.rig import SlapdInstance
from idsync.rig.errors import RigError
from idsync.rig.ports import accepts_connections, free_port, require_free_port
from idsync.rig.process import ManagedProcess
from idsync.rig.slapd import _SCHEMA_DIR, _slapd, _ssha

_HEAD = f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {_SCHEMA_DIR}/idsync.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov
"""

_DATABASE = """
database mdb
suffix "{suffix}"
rootdn "{admin_dn}"
rootpw {password_hash}
directory {directory}
maxsize 1073741824
dbnosync
index objectClass,entryUUID,entryCSN eq
limits dn.exact="{admin_dn}" size=unlimited time=unlimited
syncrepl rid={rid:03d} provider={provider} type=refreshAndPersist retry="1 +" searchbase="{suffix}"
  bindmethod=simple binddn="{admin_dn}" credentials="{password}" schemachecking=off
overlay syncprov
"""


@dataclass(frozen=True, slots=True)
class ReplicaDatabase:
    """One replicated suffix, as a DirectoryServer for watchers and admin connections."""

    url: str
    suffix: str
    admin_dn: str
    admin_password: str


class SyncreplReplica:
    """Started cold (empty databases): slapd fetches every entry of its providers, then follows them."""

    def __init__(self, workdir: Path, providers: Sequence[SlapdInstance], *, name: str = "replica") -> None:
        self.home = Path(workdir) / name
        self.name = name
        self.port = free_port()
        self.providers = list(providers)
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.running else None

    def databases(self) -> list[ReplicaDatabase]:
        return [ReplicaDatabase(self.url, p.suffix, p.admin_dn, p.admin_password) for p in self.providers]

    def start(self, timeout: float = 15) -> SyncreplReplica:
        require_free_port(self.port, f"slapd {self.name}")
        conf = self._write_conf()
        self._process = ManagedProcess(
            f"slapd-{self.name}", [_slapd(), "-f", str(conf), "-h", f"{self.url}/", "-d", "none"],
            log_path=self.home / "slapd.log",
        )
        self._process.start()
        deadline = time.monotonic() + timeout
        while not accepts_connections(self.port):
            if not self._process.running or time.monotonic() > deadline:
                self._process.kill()
                raise RigError(f"replica slapd did not listen; see {self.home / 'slapd.log'}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(10)

    def _write_conf(self) -> Path:
        run = self.home / "run"
        run.mkdir(parents=True, exist_ok=True)
        parts = [_HEAD, f"pidfile {run}/slapd.pid\nargsfile {run}/slapd.args\n"]
        for rid, provider in enumerate(self.providers, start=1):
            directory = self.home / f"db{rid}"
            directory.mkdir(parents=True, exist_ok=True)
            parts.append(_DATABASE.format(
                suffix=provider.suffix, admin_dn=provider.admin_dn, password_hash=_ssha(provider.admin_password),
                password=provider.admin_password, directory=directory, rid=rid, provider=provider.url,
            ))
        conf = self.home / "slapd.conf"
        conf.write_text("".join(parts))
        conf.chmod(0o600)
        return conf
