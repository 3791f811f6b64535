"""A test certificate authority for the rig's TLS servers, made with the openssl command.

Everything lives in one directory of the test session: the CA's certificate and key, and the
certificates it issues (PEM, keys unencrypted, PKCS#8 as Kafka's PEM key stores want them). Nothing
here is fit for production; it exists so that tests verify certificates for real.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from idsync.rig.errors import RigError

_DAYS = "3"
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate, its private key, and the certificate of the CA that issued it."""

    cert: Path
    key: Path
    ca: Path


class TestCA:
    """A CA that issues server and client certificates for loopback names."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, directory: Path, *, name: str = "idsync rig test CA") -> None:
        self.directory = Path(directory)
        self.name = name
        self.cert = self.directory / "ca.pem"
        self.key = self.directory / "ca.key"

    def create(self) -> TestCA:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.cert.exists():
            _openssl("req", "-x509", *_KEY, "-keyout", str(self.key), "-out", str(self.cert), "-days", _DAYS,
                     "-subj", f"/CN={self.name}",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign")
            self.key.chmod(0o600)
        return self

    def issue(self, name: str, *, hosts: tuple[str, ...] = ("127.0.0.1",)) -> Certificate:
        """A certificate for `hosts` (IP addresses or DNS names), good for servers and clients."""
        key, csr, cert = (self.directory / f"{name}.{suffix}" for suffix in ("key", "csr", "pem"))
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
            f"subjectAltName={','.join(_alt_name(host) for host in hosts)}\n"
        )
        _openssl("req", "-new", *_KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={hosts[0]}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-CAcreateserial", "-days", _DAYS, "-extfile", str(extensions), "-out", str(cert))
        key.chmod(0o600)
        csr.unlink()
        return Certificate(cert=cert, key=key, ca=self.cert)


def _alt_name(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RigError("no `openssl` command found: install Debian's openssl package")
    done = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RigError(f"openssl {args[0]} failed: {done.stderr[-2000:]}")
