"""A single-node Apache Kafka broker (KRaft, broker and controller in one JVM) for tests and demos."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient

from idsync.rig.errors import RigError
from idsync.rig.pki import Certificate
from idsync.rig.ports import accepts_connections, free_port, require_free_port
from idsync.rig.process import ManagedProcess

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "3.9.2"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_LOG4J_CONFIG = _REPO_ROOT / "docker" / "kafka" / "log4j.properties"
# Measured: ~22 MB of live heap after start, ~230 MB RSS, ready in ~2.5 s. A larger initial metaspace
# avoids two full GCs during start-up.
_JVM_OPTIONS = ["-Xmx256m", "-XX:MetaspaceSize=96m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]
_PROBE_GROUP = "idsync-rig-readiness-probe"


def cache_dir(version: str = DEFAULT_VERSION) -> Path:
    """Where docker/bootstrap.sh puts the jars of one Kafka version."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "idsync" / f"kafka-{version}"


def kafka_libs(version: str = DEFAULT_VERSION) -> Path:
    """The directory holding the broker's jars; RigError when they were never fetched."""
    libs = cache_dir(version) / "libs"
    if not (cache_dir(version) / "libs.complete").is_file():
        raise RigError(
            f"Kafka {version} jars are missing from {libs}: run `bash docker/bootstrap.sh` from the repo root"
        )
    return libs


def _new_cluster_id() -> str:
    # Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding; ids starting with
    # "-" are avoided because the command-line tools would read them as options.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RigError("no `java` on PATH: run `bash docker/bootstrap.sh` from the repo root")
    return java


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class SaslSslListener:
    """A SASL_SSL listener: TLS with `certificate`, clients authenticated by SASL (SCRAM-SHA-256,
    SCRAM-SHA-512 or PLAIN) as one of `users` (name -> password)."""

    certificate: Certificate
    users: Mapping[str, str] = field(default_factory=dict)


class KafkaBroker:
    """One broker whose data and logs live in workdir; stop() then start() resumes from that data.

    With `sasl_ssl` it also listens for SASL_SSL clients on `sasl_ssl_port`; the brokers' own
    traffic stays on the PLAINTEXT listener. SCRAM credentials are created by Kafka's storage
    tool when the storage is formatted (`--add-scram`), so they exist before the broker starts.
    """

    def __init__(
        self, workdir: Path, *, port: int | None = None, version: str = DEFAULT_VERSION,
        sasl_ssl: SaslSslListener | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.version = version
        self.port = port if port is not None else free_port()
        self.controller_port = free_port()
        self.sasl_ssl = sasl_ssl
        self.sasl_ssl_port = free_port() if sasl_ssl is not None else None
        self._process: ManagedProcess | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        if self.sasl_ssl_port is None:
            raise RigError("this broker has no SASL_SSL listener")
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.running else None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "server.log"

    def start(self, timeout: float = 90) -> KafkaBroker:
        if self._process is not None and self._process.running:
            return self
        started = time.monotonic()
        libs = kafka_libs(self.version)
        require_free_port(self.port, "Kafka broker")
        require_free_port(self.controller_port, "Kafka controller")
        if self.sasl_ssl_port is not None:
            require_free_port(self.sasl_ssl_port, "Kafka SASL_SSL listener")
        properties = self._write_properties()
        if not (self.data_dir / "meta.properties").is_file():
            self._format_storage(libs, properties)
        self._process = ManagedProcess(
            "kafka",
            self._java_command(libs, "kafka.Kafka", str(properties)),
            log_path=self.workdir / "logs" / "stdout.log",
            cwd=self.workdir,
        )
        self._process.start()
        try:
            self._wait_until_ready(self._process, started + timeout)
        except BaseException:
            self._process.kill()
            raise
        logger.info(
            "kafka broker ready bootstrap=%s pid=%d seconds=%.2f workdir=%s",
            self.bootstrap_servers,
            self._process.pid,
            time.monotonic() - started,
            self.workdir,
        )
        return self

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a controlled shutdown, ~0.5 s), SIGKILL after timeout. Idempotent."""
        if self._process is not None and self._process.running:
            self._process.stop(timeout)
            logger.info("kafka broker stopped bootstrap=%s", self.bootstrap_servers)

    def kill(self) -> None:
        """SIGKILL, as in a crash: the next start() recovers the logs."""
        if self._process is not None and self._process.running:
            self._process.kill()
            logger.info("kafka broker killed bootstrap=%s", self.bootstrap_servers)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _write_properties(self) -> Path:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        properties = {
            "node.id": "1",
            "process.roles": "broker,controller",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            # One broker: internal topics cannot have more than one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            # Few partitions: the group and transaction coordinators load them all before serving.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            # The cleaner allocates its dedupe buffer up front (128 MiB by default, half the heap).
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            # After a kill the controller refuses the restarted broker's registration until the old
            # session times out (9 s by default); crash-and-restart tests should not wait that long.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            # Compaction happens within seconds, so tests can observe it.
            "log.cleaner.backoff.ms": "500",
        }
        if self.sasl_ssl is not None:
            properties |= self._sasl_ssl_properties(self.sasl_ssl)
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        path.chmod(0o600)  # PLAIN's users and passwords are in it
        return path

    def _sasl_ssl_properties(self, listener: SaslSslListener) -> dict[str, str]:
        # Kafka's PEM key store: the private key (PKCS#8, unencrypted) and the certificate chain in one file.
        keystore = self.workdir / "sasl-ssl-keystore.pem"
        keystore.write_text(listener.certificate.key.read_text() + listener.certificate.cert.read_text())
        keystore.chmod(0o600)
        plain_users = " ".join(f'user_{name}="{password}"' for name, password in listener.users.items())
        scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},SASL_SSL://127.0.0.1:{self.sasl_ssl_port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},SASL_SSL://127.0.0.1:{self.sasl_ssl_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": ",".join((*SCRAM_MECHANISMS, "PLAIN")),
            **{f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config": scram_login
               for mechanism in SCRAM_MECHANISMS},
            "listener.name.sasl_ssl.plain.sasl.jaas.config":
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.client.auth": "none",
        }

    def _scram_credentials(self) -> list[str]:
        """kafka-storage format's --add-scram arguments: every user, for both SCRAM mechanisms."""
        if self.sasl_ssl is None:
            return []
        return [argument for name, password in self.sasl_ssl.users.items() for mechanism in SCRAM_MECHANISMS
                for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")]

    def _java_command(self, libs: Path, main_class: str, *args: str) -> list[str]:
        logs = self.workdir / "logs"
        return [
            _java(),
            *_JVM_OPTIONS,
            f"-Xlog:gc:file={logs / 'gc.log'}",
            f"-Dlog4j.configuration=file:{_LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={logs}",
            "-cp",
            f"{libs}/*",
            main_class,
            *args,
        ]

    def _format_storage(self, libs: Path, properties: Path) -> None:
        command = self._java_command(
            libs, "kafka.tools.StorageTool", "format", "-t", _new_cluster_id(), "-c", str(properties),
            *self._scram_credentials(),
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RigError(f"kafka storage format failed in {self.data_dir}: {result.stdout}{result.stderr}")

    def _wait_until_ready(self, process: ManagedProcess, deadline: float) -> None:
        """Until a metadata request is answered and a group coordinator is found.

        The coordinator check also creates __consumer_offsets, so the first test's group join is fast.
        """
        last_error: BaseException | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="kafka-probe") as probe_thread:
            while time.monotonic() < deadline:
                if not process.running:
                    raise RigError(
                        f"kafka broker exited with code {process.returncode} before it was ready; "
                        f"see {self.log_file}:\n{process.log_tail()}"
                    )
                if accepts_connections(self.port):
                    # A thread of its own, with its own event loop: start() may be called from a
                    # coroutine, where asyncio.run() is not allowed.
                    try:
                        probe_thread.submit(lambda: asyncio.run(_probe(self.bootstrap_servers))).result()
                        return
                    except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                        last_error = exc
                time.sleep(0.2)
        raise RigError(
            f"kafka broker not ready at {self.bootstrap_servers} in time (last error: {last_error!r}); "
            f"see {self.log_file}"
        )


async def _probe(bootstrap_servers: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    try:
        await admin.start()
        await admin.describe_cluster()
        await admin.find_coordinator(_PROBE_GROUP)
    finally:
        await admin.close()
