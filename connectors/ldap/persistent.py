"""A search that does not end (RFC 4533 refreshAndPersist, AD change notifications), received on
a thread of its own.

The search runs on a connection of its own, opened and bound like any other
(:func:`connectors.ldap.session.open_connection`). Once the request is sent, a thread owns the
socket: it frames each message, decodes it (:mod:`connectors.ldap.wire`) and hands it to the
caller's callback, which may block to hold the server back. ldap3's own streaming strategy was
used before; its receiver thread kept every response in a list, re-framed its buffer message by
message and decoded each entry twice over, which made it the push reader's bottleneck.

The thread ends when the server ends the search (after a searchResDone or a notice of
disconnection), when the connection drops, when a message cannot be decoded (``end_reason``
says which), or on close().
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Callable, Sequence

from ldap3 import DEREF_NEVER, SUBTREE, Connection
from ldap3.operation.search import search_operation

from connectors.ldap.session import discard, open_connection, sorted_errors
from connectors.ldap.wire import decode_response, message_length
from streams.config.forests import Forest

log = logging.getLogger(__name__)

_RECEIVE_BYTES = 256 * 1024
# How often the receiving thread looks whether it was asked to stop while the search is silent.
_WAKE_SECONDS = 0.5
# A persistent search is silent while the directory is idle: keepalives notice a peer that
# vanished without closing the connection (idle seconds, probe interval, probes).
_KEEPALIVE = (30, 10, 3)


class PersistentSearch:
    def __init__(
        self,
        forest: Forest,
        *,
        base: str,
        search_filter: str,
        attributes: Sequence[str],
        controls: list,
        on_message: Callable[[dict], None],
        timeout: int = 10,
    ) -> None:
        self._forest = forest
        self._request = (base, search_filter, list(attributes), controls)
        self._on_message = on_message
        self._timeout = timeout
        self._connection: Connection | None = None
        self._receiver: threading.Thread | None = None
        self._closed = False
        # open() may still run in its thread when close() is called (a cancelled reader).
        self._lifecycle = threading.Lock()
        self.end_reason: str | None = None

    @property
    def alive(self) -> bool:
        return self._receiver is not None and self._receiver.is_alive()

    def open(self) -> None:
        """Blocking: connect, bind, send the search, start receiving. LDAP failures leave as
        RetriableError or PermanentError."""
        base, search_filter, attributes, controls = self._request
        with self._lifecycle, sorted_errors(self._forest.name):
            if self._closed:
                return
            connection = self._connection = open_connection(self._forest, timeout=self._timeout)
            try:
                _keep_alive(connection.socket)
                request = search_operation(
                    base, search_filter, SUBTREE, DEREF_NEVER, attributes, 0, 0, False,
                    connection.auto_escape, connection.auto_encode, None,
                    validator=None, check_names=connection.check_names,
                )
                message_id = connection.send("searchRequest", request, controls)
                connection.socket.settimeout(_WAKE_SECONDS)
                self._receiver = threading.Thread(
                    target=self._receive, args=(connection, message_id),
                    name=f"persistent-search-{self._forest.name}", daemon=True,
                )
                self._receiver.start()
            except BaseException:
                self._teardown()
                raise

    def close(self) -> None:
        """Blocking: stop receiving, close the connection, wait for the receiving thread."""
        self._closed = True
        with self._lifecycle:
            self._teardown()

    def _teardown(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.socket.shutdown(socket.SHUT_RDWR)  # wakes the receiving thread at once
        except OSError:
            pass  # the connection is already gone
        if self._receiver is not None:
            self._receiver.join(self._timeout)
        discard(connection)

    def _receive(self, connection: Connection, message_id: int) -> None:
        """On the receiving thread: every message of the search to on_message, in order."""
        buffer = bytearray()
        try:
            while not self._closed:
                try:
                    data = connection.socket.recv(_RECEIVE_BYTES)
                except TimeoutError:
                    continue
                if not data:
                    self._end("connection closed by the server")
                    return
                buffer += data
                consumed = 0
                while (length := message_length(buffer, consumed)) is not None and len(buffer) - consumed >= length:
                    message = bytes(buffer[consumed : consumed + length])
                    consumed += length
                    received_id, response = decode_response(connection.strategy, message)
                    if received_id == 0:  # the server's notice of disconnection (RFC 4511 4.4.1)
                        self._end(f"server disconnects: {response.get('message') or response.get('responseName')}")
                        return
                    if received_id != message_id:
                        continue  # not this search's (a late answer to an earlier request)
                    self._on_message(response)
                    if response["type"] == "searchResDone":
                        self._end(f"search ended: {response.get('description')}: {response.get('message')}")
                        return
                del buffer[:consumed]
        except Exception as exc:  # noqa: BLE001 - whatever ended it is the reason the reader reports
            if not self._closed:
                self._end(f"{type(exc).__name__}: {exc}")

    def _end(self, reason: str) -> None:
        self.end_reason = reason
        if not self._closed:
            log.info("persistent search ended forest=%s reason=%r", self._forest.name, reason)


def _keep_alive(sock: socket.socket) -> None:
    idle, interval, probes = _KEEPALIVE
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
