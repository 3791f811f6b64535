"""A syncrepl refreshAndPersist watcher of one subtree: when each entry, and each displayName
value, was first seen there.

It is a client of the watched slapd's syncprov (RFC 4533), as a replica would be: it sees what a
reader of that directory sees, independent of whatever wrote it (idsync's logs are not consulted).
Messages arrive on PersistentSearch's receiving thread; the callback only notes times.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from connectors.ldap.persistent import PersistentSearch
from connectors.openldap.rfc4533 import (
    SYNC_STATE_OID, SyncMode, SyncProtocolError, SyncState, decode_sync_state, sync_request_control,
)
from idsync.rig.forests import DirectoryServer, reader_forest


class Watcher:
    def __init__(self, server: DirectoryServer, base: str, search_filter: str, password_file: Path, *, name: str,
                 value_attribute: str = "displayName") -> None:
        forest = reader_forest(server, base, password_file, name=name, mode="accesslog-sync")
        self.name = name
        self._attribute = value_attribute
        # dn (lower-case) -> when first seen; dn -> present now; displayName value -> when first seen.
        self.first_seen: dict[str, float] = {}
        self.present: set[str] = set()
        self.value_seen: dict[str, float] = {}
        self.last_change = 0.0
        self.deletes = 0
        self.refreshed = threading.Event()
        self._new_search = lambda: PersistentSearch(
            forest, base=base, search_filter=search_filter, attributes=[value_attribute],
            controls=[sync_request_control(SyncMode.REFRESH_AND_PERSIST, None)], on_message=self._receive,
        )
        self._search = self._new_search()

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self._search.close()

    def start(self, retry_seconds: float = 0.0) -> Watcher:
        """Open the search; while its base does not exist yet (a replica still fetching it: the
        search ends at once), open it again for up to `retry_seconds`."""
        deadline = time.monotonic() + retry_seconds
        while True:
            self._search.open()
            while self._search.alive and not self.refreshed.is_set() and not self.first_seen:
                time.sleep(0.002)
            if self._search.alive or self.first_seen or time.monotonic() > deadline:
                return self
            self._search.close()
            self._search = self._new_search()
            time.sleep(0.005)

    @property
    def alive(self) -> bool:
        return self._search.alive

    def _receive(self, message: dict) -> None:
        now = time.perf_counter()
        kind = message.get("type")
        if kind == "intermediateResponse":
            self.refreshed.set()  # a Sync Info message: slapd sends refreshDelete/Present at the end of the refresh
            return
        if kind != "searchResEntry":
            return
        dn = message["dn"].lower()
        if _state(message) == SyncState.DELETE:
            self.present.discard(dn)
            self.deletes += 1
        else:
            self.first_seen.setdefault(dn, now)
            self.present.add(dn)
            for value in message["raw_attributes"].get(self._attribute) or ():
                self.value_seen.setdefault(value.decode(), now)
        self.last_change = now

    def wait(self, predicate, timeout: float, poll: float = 0.05) -> bool:
        """Poll `predicate(self)` until it holds (True) or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline or not self.alive:
                return False
            time.sleep(poll)
        return True

    def settle(self, quiet: float, timeout: float) -> None:
        """Wait until no change arrived for `quiet` seconds (at most `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and time.perf_counter() - self.last_change < quiet:
            time.sleep(0.05)


def _state(message: dict) -> SyncState | None:
    control = (message.get("controls") or {}).get(SYNC_STATE_OID)
    if control is None:
        return None
    try:
        return decode_sync_state(control["value"]).state
    except SyncProtocolError:
        return None
