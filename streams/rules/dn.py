"""Distinguished names in one canonical form (RFC 4514), so that two spellings of one name
compare equal.

Directories answer with their own escaping: slapd returns ``cn=Smith\\2C Ada`` for the name
idsync wrote as ``cn=Smith\\, Ada``. Comparing the text made every update of such a contact a
rename to the same name. Here a DN is parsed into (attribute type, raw value) pairs: types
lower-cased (they are case-insensitive), values unescaped and compared exactly (a change of case
in a display name is a real rename).
"""

from __future__ import annotations

from functools import lru_cache

_SPECIAL = frozenset(',+"\\<>;=')
_HEX = frozenset("0123456789abcdefABCDEF")

Rdn = tuple[tuple[str, str], ...]


class DnError(ValueError):
    """Text that is not a distinguished name."""


def escape_value(value: str) -> str:
    """An attribute value escaped for use in a DN (RFC 4514 section 2.4)."""
    out = []
    for index, char in enumerate(value):
        if char in _SPECIAL:
            out.append("\\" + char)
        elif char == "\x00":
            out.append("\\00")
        elif (char == "#" and index == 0) or (char == " " and index in (0, len(value) - 1)):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


# A writer asks about the same names several times a batch (and about the same containers for
# every contact): parsed character by character, they cost it more than encoding its writes.
@lru_cache(maxsize=16384)
def canonical(dn: str) -> tuple[Rdn, ...]:
    """The DN as RDNs of sorted (lower-cased type, unescaped value) pairs, leaf first."""
    rdns: list[Rdn] = []
    for rdn_text in _split(dn, ","):
        pairs = []
        for ava in _split(rdn_text, "+"):
            name, sep, value = ava.partition("=")
            if not sep or not name.strip():
                raise DnError(f"{dn!r}: {ava!r} is not attribute=value")
            pairs.append((name.strip().lower(), _unescape(value.strip() if not value.endswith("\\ ") else value.lstrip())))
        rdns.append(tuple(sorted(pairs)))
    return tuple(rdns)


def same_dn(left: str, right: str) -> bool:
    return canonical(left) == canonical(right)


def rdn_and_parent(dn: str) -> tuple[str, str]:
    """The first RDN, as written, and the rest of the DN."""
    parts = _split(dn, ",")
    return parts[0].strip(), ",".join(part.strip() for part in parts[1:])


def is_below(dn: str, base_dn: str) -> bool:
    """True when `dn` is `base_dn` or lies under it (container names compared ignoring case,
    as the directory compares ou and dc values)."""
    inner, base = _folded(canonical(dn)), _folded(canonical(base_dn))
    return len(inner) >= len(base) and inner[len(inner) - len(base):] == base


def _folded(rdns: tuple[Rdn, ...]) -> tuple[Rdn, ...]:
    return tuple(tuple((name, value.casefold()) for name, value in rdn) for rdn in rdns)


def _split(text: str, separator: str) -> list[str]:
    """`text` split at each unescaped `separator` (escapes kept for _unescape)."""
    parts, current, index = [], [], 0
    if not text.strip():
        return []
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index : index + 2])
            index += 2
            continue
        if char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    raw = bytearray()
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\":
            pair = value[index + 1 : index + 3]
            if len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX:
                raw.append(int(pair, 16))
                index += 3
                continue
            if index + 1 >= len(value):
                raise DnError(f"{value!r}: a DN value may not end with a lone backslash")
            raw.extend(value[index + 1].encode())
            index += 2
            continue
        raw.extend(char.encode())
        index += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DnError(f"{value!r}: escaped bytes are not UTF-8") from exc
