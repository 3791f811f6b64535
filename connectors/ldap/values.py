"""LDAP values and names as every directory family's reader needs them: DNs compared by
containment, raw values as event text, and positions that are generalized times.

Pure functions, shared by the OpenLDAP (:mod:`connectors.openldap`), Active Directory
(:mod:`connectors.ad`) and generic (:mod:`connectors.ldap.generic_poll`) readers.
"""

from __future__ import annotations

import base64
import functools
from datetime import datetime, timedelta, timezone

from ldap3.utils.dn import parse_dn

from streams.events import BINARY_SUFFIX

GENERALIZED_TIME = "%Y%m%d%H%M%S"


class RecordError(ValueError):
    """A directory record (an accesslog record, a search entry) that cannot become an event."""


def within(dn: str | None, base_dn: str) -> bool:
    """Whether `dn` is `base_dn` or below it (attribute types and values compared case-insensitively)."""
    if not dn:
        return False
    if _plainly_below(dn, base_dn):
        return True
    try:
        entry, base = _dn_key(dn), _dn_key(base_dn)
    except Exception:  # noqa: BLE001 - ldap3 raises several types for a malformed DN
        return False
    return len(entry) >= len(base) and entry[len(entry) - len(base) :] == base


def _plainly_below(dn: str, base_dn: str) -> bool:
    """The common case without parsing: `dn` ends with `,base_dn` spelled the same way (but for
    case), and that comma is a separator, not escaped. Anything else is parsed."""
    suffix = "," + base_dn.lower()
    lowered = dn.lower()
    if not lowered.endswith(suffix):
        return False
    backslashes = len(lowered) - len(suffix) - len(lowered[: len(lowered) - len(suffix)].rstrip("\\"))
    return backslashes % 2 == 0


@functools.lru_cache(maxsize=64)
def _dn_key(dn: str) -> tuple[tuple[str, str], ...]:
    return tuple((name.lower(), unescape(value).lower()) for name, value, _ in parse_dn(dn))


def unescape(value: str) -> str:
    """Undo RFC 4514 escaping (``\\,`` and ``\\c3\\a9`` style) in one RDN value."""
    out, i = bytearray(), 0
    while i < len(value):
        pair = value[i + 1 : i + 3]
        if value[i] == "\\" and len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
            out.append(int(pair, 16))
            i += 3
        elif value[i] == "\\" and i + 1 < len(value):
            out += value[i + 1].encode()
            i += 2
        else:
            out += value[i].encode()
            i += 1
    return out.decode("utf-8", errors="replace")


def attribute_value(name: str, value: bytes) -> tuple[str, str]:
    """A raw LDAP value as event text: UTF-8 as is, anything else base64 under name;base64."""
    try:
        return name, value.decode("utf-8")
    except UnicodeDecodeError:
        return name + BINARY_SUFFIX, base64.b64encode(value).decode("ascii")


def position_minus(position: str, seconds: float) -> str:
    """The earliest position of the second `seconds` before `position`'s second."""
    moment = datetime.strptime(position[:14], GENERALIZED_TIME) - timedelta(seconds=seconds)
    return f"{moment:{GENERALIZED_TIME}}.000000Z"


def position_at(moment: datetime) -> str:
    return f"{moment.astimezone(timezone.utc):{GENERALIZED_TIME}}.000000Z"

