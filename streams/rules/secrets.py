"""Password hashes and keys never leave a reader: not in a change, not in a rejected record.

No sync needs them, and a topic is read by more people and kept longer than a directory's
protected attributes. Attribute names compare without case and without options (``;base64``,
``;binary``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import orjson

from streams.events import DirectoryChange

SECRET_ATTRIBUTES = frozenset(
    name.lower()
    for name in (
        "userPassword", "authPassword", "pwdHistory", "unicodePwd", "dBCSPwd", "ntPwdHistory", "lmPwdHistory",
        "supplementalCredentials", "msDS-ManagedPassword", "sambaNTPassword", "sambaLMPassword",
        "sambaPasswordHistory", "krbPrincipalKey", "userPKCS12",
        # Active Directory trust and secret objects.
        "currentValue", "priorValue", "trustAuthIncoming", "trustAuthOutgoing", "initialAuthIncoming",
        "initialAuthOutgoing",
    )
)
# An accesslog value naming its attribute: "userPassword:= {SSHA}..." (reqMod), "userPassword: ..." (reqOld).
_NAMED_VALUE = re.compile(r"\s*([A-Za-z][A-Za-z0-9-]*)(?:;[^:]*)?:")
WITHHELD = orjson.dumps({"withheld": "the rejected record is not JSON, so its secrets could not be removed"})


def is_secret(attribute: str) -> bool:
    return attribute.split(";", 1)[0].strip().lower() in SECRET_ATTRIBUTES


def without_secrets(change: DirectoryChange) -> DirectoryChange:
    """The change without any value or modification of a secret attribute."""
    if not any(is_secret(name) for name in change.attributes) and not any(
        is_secret(modification.attribute) for modification in change.modifications
    ):
        return change
    return replace(
        change,
        attributes={name: values for name, values in change.attributes.items() if not is_secret(name)},
        modifications=tuple(m for m in change.modifications if not is_secret(m.attribute)),
    )


def scrub_record(raw: bytes) -> bytes:
    """A rejected record (JSON, as the readers keep it) without secrets, whatever its shape: an
    entry's attributes, an accesslog record's reqMod/reqOld lines, a change event's attributes and
    modifications. A record that is not JSON is withheld whole."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return WITHHELD
    scrubbed = _scrub(document)
    return raw if scrubbed == document else orjson.dumps(scrubbed)


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items() if not is_secret(str(key))}
    if isinstance(value, list):
        return [_scrub(item) for item in value if not _names_a_secret(item)]
    return value


def _names_a_secret(item: Any) -> bool:
    """A list item that carries a secret: an accesslog line of a secret attribute, or a
    modification of one."""
    if isinstance(item, str):
        return (match := _NAMED_VALUE.match(item)) is not None and is_secret(match.group(1))
    if isinstance(item, dict):
        return isinstance(item.get("attribute"), str) and is_secret(item["attribute"])
    return False
