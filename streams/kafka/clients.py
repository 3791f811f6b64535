"""How every Kafka client idsync creates connects: the one place that turns the topology's kafka
settings into client settings, so producers, consumers, admin clients and the faust app all
authenticate and encrypt alike.

TLS connections verify the broker's certificate against the system's CA bundle or
``kafka.tls.ca_file``, and its host name (aiokafka hands the bootstrap host to the handshake).
The SASL password is read when a client is made, from its environment variable or file.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from streams.config.security import KafkaSecurity, TlsFiles
from streams.config.topology import KafkaSettings

# A cluster: the topology's settings, or bare bootstrap servers of a PLAINTEXT cluster (tests, tools).
Brokers = KafkaSettings | str


def client_settings(kafka: Brokers) -> dict[str, Any]:
    """Keyword arguments for an aiokafka producer, consumer or admin client of `kafka`."""
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka}
    security = kafka.security
    settings: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": security.protocol,
    }
    if security.encrypted:
        settings["ssl_context"] = ssl_context(security.tls)
    if security.sasl is not None:
        settings |= {
            "sasl_mechanism": security.sasl.mechanism,
            "sasl_plain_username": security.sasl.username,
            "sasl_plain_password": security.sasl.password.reveal(),
        }
    return settings


def broker_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """faust's `broker_credentials` for the same settings (faust 0.15.3 passes them to each of
    its consumers and producers: SASLCredentials with an ssl_context is SASL_SSL, without
    SASL_PLAINTEXT; SSLCredentials is SSL)."""
    context = ssl_context(security.tls) if security.encrypted else None
    if security.sasl is not None:
        return SASLCredentials(username=security.sasl.username, password=security.sasl.password.reveal(),
                               ssl_context=context, mechanism=security.sasl.mechanism)
    if context is not None:
        return SSLCredentials(context)
    return None


def ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """Certificate and host name verified, TLS 1.2 at least, the client certificate if configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.cert_file is not None:
        context.load_cert_chain(files.cert_file, keyfile=files.key_file)
    return context


class KafkaAccessError(Exception):
    """No bootstrap server accepted idsync's connection: the reason of each, in one line.
    `refused`: a server answered and refused idsync (credentials, certificate), which needs a
    person; otherwise none could be reached, which waiting may mend."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


# A server that answers with one of these refuses idsync itself: retrying changes nothing.
_REFUSALS = (ssl.SSLError, AuthenticationFailedError, AuthenticationMethodNotSupported, SaslAuthenticationFailed,
             UnsupportedSaslMechanismError, IllegalSaslStateError, ValueError)


async def check_access(kafka: KafkaSettings, *, timeout_seconds: float = 15) -> None:
    """Connect to the bootstrap servers as every client will (TLS handshake and SASL
    authentication included) until one accepts; KafkaAccessError with each one's reason if none
    does. aiokafka's own clients only say they could not bootstrap, and log the reason apart."""
    settings = client_settings(kafka)
    options = {key: value for key, value in settings.items() if key != "bootstrap_servers"}
    reasons, refused = [], False
    for server in kafka.bootstrap_servers.split(","):
        host, _, port = server.rpartition(":")
        try:
            connection = await create_conn(host.strip("[]"), int(port), request_timeout_ms=int(timeout_seconds * 1000),
                                           **options)
        except (OSError, KafkaError, ValueError, asyncio.TimeoutError) as exc:
            reasons.append(f"{server}: {_reason(exc)}")
            refused = refused or isinstance(exc, _REFUSALS)
            continue
        connection.close()
        return
    raise KafkaAccessError(f"cannot connect to Kafka ({kafka.security.protocol}"
                           + (f", SASL {kafka.security.sasl.mechanism} as {kafka.security.sasl.username}"
                              if kafka.security.sasl else "")
                           + f"): {'; '.join(reasons)}", refused=refused)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not accepted: {exc.verify_message}"
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__
