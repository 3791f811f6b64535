"""Attribute templates: how one contact attribute is built from a source user's attributes.

``"SMTP:{mail}"`` is the literal ``SMTP:`` followed by the user's ``mail``; ``{sn|cn}`` is the
first of ``sn`` and ``cn`` that has a value (a group has no surname, and a contact class that
requires one would refuse it); ``{{`` and ``}}`` are literal braces. Templates are parsed once, when the topology loads, so a typo fails the
start-up instead of silently producing wrong contacts later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_ATTRIBUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[^{}]+|[{}]")


def is_attribute_name(name: str) -> bool:
    """True for an LDAP attribute descriptor such as ``mail`` or ``msRTCSIP-PrimaryUserAddress``."""
    return _ATTRIBUTE_NAME.fullmatch(name) is not None


class TemplateError(ValueError):
    """A template that cannot be parsed; the message says where and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Placeholder:
    name: str
    # Attributes tried in turn after `name` when it has no value: "{sn|cn}".
    fallbacks: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.fallbacks)


@dataclass(frozen=True, slots=True, kw_only=True)
class Template:
    """Literal text and placeholders; a template without placeholders is a constant."""

    parts: tuple[str | Placeholder, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        if not text:
            raise TemplateError("empty template; an LDAP attribute value cannot be empty")
        parts: list[str | Placeholder] = []
        for token in _TOKEN.finditer(text):
            name = token.group(1)
            if name is not None:
                names = name.split("|")
                if not all(is_attribute_name(n) for n in names):
                    raise TemplateError(
                        f"bad placeholder {token.group()!r} at position {token.start()}: a placeholder "
                        "names a source attribute (a letter, then letters, digits or hyphens), or "
                        "several separated by '|', the first with a value winning"
                    )
                parts.append(Placeholder(name=names[0], fallbacks=tuple(names[1:])))
                continue
            literal = token.group()
            if literal in ("{", "}"):
                raise TemplateError(
                    f"unbalanced {literal!r} at position {token.start()}; write {literal * 2!r} for a literal brace"
                )
            if literal in ("{{", "}}"):
                literal = literal[0]
            if parts and isinstance(parts[-1], str):
                parts[-1] += literal
            else:
                parts.append(literal)
        return cls(parts=tuple(parts))

    @property
    def placeholders(self) -> tuple[str, ...]:
        """Source attribute names used, in order of first use, without repeats."""
        return tuple(dict.fromkeys(n for part in self.parts if isinstance(part, Placeholder) for n in part.names))

    def render(self, values: Mapping[str, str]) -> str | None:
        """The attribute value, or None when a placeholder's attribute is missing or empty.

        None means the contact should not have the attribute at all: a half-filled value such as
        ``"SMTP:"`` would be worse than none.
        """
        # LDAP attribute names ignore case, and servers may answer `mail` for a requested `Mail`.
        folded = {name.lower(): value for name, value in values.items()}
        rendered: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                rendered.append(part)
                continue
            value = next((v for n in part.names if (v := folded.get(n.lower()))), None)
            if not value:
                return None
            rendered.append(value)
        return "".join(rendered)
