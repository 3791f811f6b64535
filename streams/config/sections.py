"""The machinery of topology.yaml's validator: a section reads one YAML mapping, records every
problem with its YAML path and carries on, so the loader reports all of them at once.

streams/config/topology.py, and the modules beside it for forests, contacts, the metaverse, sites
and security, read their sections with it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from streams.rules.templates import is_attribute_name


class TopologyError(Exception):
    """Everything wrong with a topology, one problem per line, each prefixed with the file name."""

    def __init__(self, errors: Sequence[str], *, source: Path | None = None) -> None:
        self.errors = tuple(errors)
        self.source = source
        super().__init__(*self.errors)

    def __str__(self) -> str:
        prefix = f"{self.source}: " if self.source is not None else ""
        return "\n".join(prefix + error for error in self.errors)


class Section:
    """One YAML mapping being read. A problem is recorded with its path and the value reads as None,
    so reading carries on and finds every error; the loader raises before an object holding
    such a None can escape."""

    def __init__(self, errors: list[str], node: Any, path: str, keys: Sequence[str]) -> None:
        self.errors, self.path = errors, path
        # A section of the wrong type gets one error; its missing keys would only add noise.
        self.broken = node is not None and not isinstance(node, dict)
        self.node: dict[Any, Any] = node if isinstance(node, dict) else {}
        if self.broken:
            self.error(None, f"expected a mapping, got {kind_of(node)}")
        for key in self.node:
            if key == "password":
                self.error(key, "passwords must not be written in the topology; "
                                "use password_env (an environment variable) or password_file (a file)")
            elif key not in keys:
                hint = difflib.get_close_matches(str(key), keys, n=1)
                self.error(key, "unknown key" + (f" (did you mean {hint[0]}?)" if hint else ""))

    def at(self, key: Any) -> str:
        return f"{self.path}.{key}" if self.path else str(key)

    def error(self, key: Any, message: str) -> None:
        self.errors.append(f"{self.path if key is None else self.at(key)}: {message}")

    def given(self, key: str) -> bool:
        return self.node.get(key) is not None

    def child(self, key: str, keys: Sequence[str]) -> Section:
        return Section(self.errors, self.node.get(key), self.at(key), keys)

    def value(self, key: str, kinds: tuple[type, ...], expected: str, default: Any = ...) -> Any:
        """The value of key, type-checked. Absent and null alike take the default; `...` means required."""
        value = self.node.get(key)
        if value is None:
            if default is ... and not self.broken:
                self.error(key, "required key is missing")
            return None if default is ... else default
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            self.error(key, f"expected {expected}, got {kind_of(value)}")
            return None
        return value

    def text(self, key: str, default: Any = ..., check: Callable[[str], str | None] | None = None) -> str | None:
        value = self.value(key, (str,), "a string", default)
        if value is not None and check is not None and (problem := check(value)):
            self.error(key, problem)
            return None
        return value

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int | None:
        """An integer from minimum to maximum, both included."""
        value = self.value(key, (int,), "an integer", default)
        if value is not None and not minimum <= value <= maximum:
            self.error(key, f"must be >= {minimum} and <= {maximum}, got {value}")
            return None
        return value

    def number(self, key: str, default: float, *, minimum: float, inclusive: bool, maximum: float) -> float | None:
        """A number above minimum (or equal to it when `inclusive`) and at most maximum."""
        value = self.value(key, (int, float), "a number", default)
        low_ok = value is not None and (value >= minimum if inclusive else value > minimum)
        if value is not None and not (math.isfinite(value) and low_ok and value <= maximum):
            bound = f"{'>=' if inclusive else '>'} {minimum:g} and <= {maximum:g}"
            self.error(key, f"must be {bound}, got {value}")
            return None
        return None if value is None else float(value)


def kind_of(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping"}
    return "nothing" if value is None else kinds.get(type(value), type(value).__name__)


def rule(ok: Callable[[str], object], message: str) -> Callable[[str], str | None]:
    return lambda value: None if ok(value) else message


def choice(choices: Sequence[str]) -> Callable[[str], str | None]:
    return lambda value: None if value in choices else f"unknown value {value!r}; known: {', '.join(choices)}"


NOT_EMPTY = rule(bool, "must not be empty")
ATTRIBUTE = rule(is_attribute_name, "not an LDAP attribute name (a letter, then letters, digits or hyphens)")
