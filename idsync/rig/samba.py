"""A Samba Active Directory domain controller (one forest, one domain) for tests and demos.

Samba's ports are fixed (389, 636, ...), so each DC listens on its own loopback address
(127.0.0.2, 127.0.0.3, ...); claim_loopback_address() hands them out, so that two test sessions
on one machine do not fight over them. Provisioning writes everything below the DC's home
directory; stop() then start() keeps the directory's contents.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, ContextManager

import ldap3
from ldap3.core.exceptions import LDAPException

from idsync.rig.admin import admin_connection
from idsync.rig.errors import RigError
from idsync.rig.ports import accepts_connections, port_is_free
from idsync.rig.process import ManagedProcess
from idsync.rig.pki import Certificate

logger = logging.getLogger(__name__)

LDAP_PORT = 389
# LDAP and LDAPS: the ports a leftover DC on the same address would hold.
_CHECKED_PORTS = (389, 636)
_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
# The DC answers only LDAP: no SMB file service, no DNS, no Kerberos or RPC endpoints to bind.
_SERVER_SERVICES = "ldap"
_PROVISIONED_MARKER = ".provisioned"
# One lock file per address, shared by every process of this machine that runs the rig.
_CLAIMS_DIR = Path(tempfile.gettempdir()) / "idsync-rig-addresses"
_CLAIMABLE = 64


def _binary(name: str) -> str:
    path = shutil.which(name, path=_SBIN_PATH)
    if path is None:
        raise RigError(f"no `{name}` binary found: run `bash docker/bootstrap.sh` from the repo root")
    return path


class AddressClaim:
    """A loopback address held for one DC until release() (or until this process ends)."""

    def __init__(self, address: str, lock_file: int) -> None:
        self.address = address
        self._lock_file: int | None = lock_file

    def release(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)  # closing drops the flock
            self._lock_file = None


def claim_loopback_address(first: str = "127.0.0.2") -> AddressClaim:
    """The first loopback address from `first` on that no other rig user holds and no server uses.

    Provisioning takes seconds between choosing an address and listening on it, so a free port
    alone proves nothing: the claim is an flock on a per-address file, which the kernel drops
    when the holder dies.
    """
    _CLAIMS_DIR.mkdir(exist_ok=True)
    start = ipaddress.ip_address(first)
    for offset in range(_CLAIMABLE):
        address = str(start + offset)
        lock_file = os.open(_CLAIMS_DIR / address, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_file)
            continue
        if any(not port_is_free(port, address) for port in _CHECKED_PORTS):
            os.close(lock_file)
            continue
        return AddressClaim(address, lock_file)
    raise RigError(f"no free loopback address among the {_CLAIMABLE} from {first} on")


class SambaDC:
    """One AD forest: realm ALPHA.IDSYNC.TEST gives the domain root DC=alpha,DC=idsync,DC=test."""

    def __init__(self, workdir: Path, *, realm: str, domain: str, host_ip: str, admin_password: str) -> None:
        labels = realm.lower().split(".")
        if len(labels) < 2 or not all(labels):
            raise ValueError(f"realm must be a DNS name such as ALPHA.IDSYNC.TEST, got {realm!r}")
        if not domain.isalnum() or len(domain) > 15:
            raise ValueError(f"domain must be a NetBIOS name (1-15 letters or digits), got {domain!r}")
        if not ipaddress.ip_address(host_ip).is_loopback or ipaddress.ip_address(host_ip).version != 4:
            raise ValueError(f"host_ip must be an IPv4 loopback address such as 127.0.0.2, got {host_ip!r}")
        self.realm = realm.upper()
        self.domain = domain.upper()
        self.host_ip = host_ip
        self.admin_password = admin_password
        self.home = Path(workdir) / domain.lower()
        self.base_dn = ",".join(f"DC={label}" for label in labels)
        self.admin_dn = f"CN=Administrator,CN=Users,{self.base_dn}"
        self._process: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"SambaDC(realm={self.realm!r}, url={self.url!r})"

    @property
    def url(self) -> str:
        return f"ldap://{self.host_ip}:{LDAP_PORT}"

    @property
    def conf(self) -> Path:
        return self.home / "etc" / "smb.conf"

    @property
    def log_file(self) -> Path:
        return self.home / "samba.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.running else None

    @property
    def provisioned(self) -> bool:
        return (self.home / _PROVISIONED_MARKER).is_file()

    def admin_connection(self, **connection_options: Any) -> ContextManager[ldap3.Connection]:
        """A connection bound as Administrator (simple bind), unbound on leaving the block."""
        return admin_connection(
            self.url, self.admin_dn, self.admin_password, server_name=f"samba {self.realm}", **connection_options
        )

    def provision(self, timeout: float = 180) -> SambaDC:
        """Creates the domain once; safe to call from a worker thread (the child exits by itself)."""
        if self.provisioned:
            return self
        started = time.monotonic()
        samba_tool = _binary("samba-tool")
        if self.home.exists():
            # Left half-done by an interrupted provision: samba-tool refuses to reuse it.
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)
        dirs = {key: self.home / key for key in ("private", "state", "cache", "lock", "run")}
        for path in dirs.values():
            path.mkdir()
        options = {
            "interfaces": f"{self.host_ip}/8",  # without a netmask Samba never listens
            "bind interfaces only": "yes",
            "server services": _SERVER_SERVICES,
            "netbios name": "DC1",
            "private dir": dirs["private"],
            "state directory": dirs["state"],
            "cache directory": dirs["cache"],
            "lock directory": dirs["lock"],
            "pid directory": dirs["run"],
            "log file": self.log_file,
        }
        argv = [
            samba_tool, "domain", "provision",
            f"--targetdir={self.home}",
            f"--realm={self.realm}",
            f"--domain={self.domain}",
            "--server-role=dc",
            "--dns-backend=NONE",
            "--use-rfc2307",
            "--host-name=dc1",
            f"--host-ip={self.host_ip}",
            f"--adminpass={self.admin_password}",
            *(f"--option={name} = {value}" for name, value in options.items()),
        ]
        log_path = self.home / "provision.log"
        with open(log_path, "wb") as log:
            try:
                result = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                raise RigError(f"samba {self.realm}: provisioning took over {timeout:.0f}s; see {log_path}") from None
        if result.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise RigError(
                f"samba {self.realm}: provisioning failed (exit {result.returncode}); see {log_path}:\n{tail}"
            )
        self._allow_simple_bind()
        (self.home / _PROVISIONED_MARKER).touch()
        logger.info(
            "samba provisioned realm=%s home=%s seconds=%.1f", self.realm, self.home, time.monotonic() - started
        )
        return self

    def start(self, timeout: float = 60) -> SambaDC:
        if self._process is not None and self._process.running:
            return self
        for port in _CHECKED_PORTS:
            if not port_is_free(port, self.host_ip):
                raise RigError(
                    f"samba {self.realm} cannot start: {self.host_ip}:{port} is already in use (a leftover DC?)"
                )
        self.provision()
        started = time.monotonic()
        samba = _binary("samba")
        # -F: foreground, so the pid held is the server's and PDEATHSIG reaches it. -M single: one
        # process, which also makes change notification reliable.
        self._process = ManagedProcess(
            f"samba-{self.domain.lower()}",
            [samba, "-s", str(self.conf), "-F", "--no-process-group", "-M", "single"],
            log_path=self.home / "samba.out",
        )
        self._process.start()
        try:
            self._wait_until_bindable(self._process, started + timeout)
        except BaseException:
            self._process.kill()
            raise
        logger.info(
            "samba ready realm=%s url=%s base_dn=%s pid=%d seconds=%.3f",
            self.realm, self.url, self.base_dn, self._process.pid, time.monotonic() - started,
        )
        return self

    def stop(self, timeout: float = 30) -> None:
        if self._process is not None:
            self._process.stop(timeout)
            logger.info("samba stopped realm=%s url=%s", self.realm, self.url)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            logger.info("samba killed realm=%s url=%s", self.realm, self.url)

    def __enter__(self) -> SambaDC:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def use_tls(self, certificate: Certificate) -> SambaDC:
        """Serve ldaps (636) and StartTLS (389) with `certificate` from the next start on.

        Writes Samba's tls lines into smb.conf, so a provisioned DC needs no re-provisioning; the
        key is copied next to the configuration with mode 0600, as Samba requires.
        """
        if self._process is not None and self._process.running:
            raise RigError(f"samba {self.realm}: use_tls() must come before start()")
        self.provision()
        tls_dir = self.home / "tls"
        tls_dir.mkdir(exist_ok=True)
        key = tls_dir / "key.pem"
        key.write_bytes(certificate.key.read_bytes())
        key.chmod(0o600)
        lines = {"tls enabled": "yes", "tls keyfile": str(key), "tls certfile": str(certificate.cert),
                 "tls cafile": str(certificate.ca)}
        kept = [line for line in self.conf.read_text().splitlines(keepends=True)
                if line.strip().split("=")[0].strip() not in lines]
        text = "".join(kept)
        marker = "[global]\n"
        if marker not in text:
            raise RigError(f"samba {self.realm}: no [global] section in {self.conf}")
        added = "".join(f"\t{name} = {value}\n" for name, value in lines.items())
        self.conf.write_text(text.replace(marker, marker + added, 1))
        return self

    def _allow_simple_bind(self) -> None:
        # The provision option does not stick; without it Samba refuses simple binds over plain LDAP.
        text = self.conf.read_text()
        marker = "[global]\n"
        if marker not in text:
            raise RigError(f"samba {self.realm}: no [global] section in {self.conf}")
        self.conf.write_text(text.replace(marker, marker + "\tldap server require strong auth = no\n", 1))

    def _wait_until_bindable(self, process: ManagedProcess, deadline: float) -> None:
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not process.running:
                raise RigError(
                    f"samba {self.realm} exited with code {process.returncode} before it was ready; "
                    f"see {self.log_file}:\n{process.log_tail()}"
                )
            if accepts_connections(LDAP_PORT, self.host_ip):
                try:
                    with self.admin_connection():
                        return
                except (LDAPException, RigError) as exc:
                    last_error = exc
            time.sleep(0.05)
        raise RigError(f"samba {self.realm} not answering at {self.url} in time (last error: {last_error!r})")
