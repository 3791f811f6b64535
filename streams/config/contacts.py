"""How idsync's contacts look in the central forest: their object classes, how they are named,
which attributes they carry (templates over the metaverse person), and the name used when another
person's contact holds the plain one."""

from __future__ import annotations

from dataclasses import dataclass

from streams.config.metaverse import DEFAULT_CLASH_SUFFIX, clash_suffix
from streams.config.sections import ATTRIBUTE, Section, kind_of
from streams.rules.templates import Template, TemplateError, is_attribute_name

DEFAULT_OBJECT_CLASSES = ("top", "person", "organizationalPerson", "contact")


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactPolicy:
    object_classes: tuple[str, ...]
    rdn_attribute: str
    rdn_source: str
    attributes: tuple[tuple[str, Template], ...]
    # Appended to the name when another person's contact holds the plain one.
    clash_suffix: Template = Template.parse(DEFAULT_CLASH_SUFFIX)


def contact_policy(sec: Section) -> ContactPolicy:
    classes = sec.value("object_classes", (list,), "a list", list(DEFAULT_OBJECT_CLASSES)) or []
    if not classes and sec.given("object_classes"):
        sec.error("object_classes", "must not be empty")
    for i, name in enumerate(classes):
        if not isinstance(name, str) or not is_attribute_name(name):
            sec.error(f"object_classes[{i}]", "not an object class name (a letter, then letters, digits or hyphens)")
    rdn_attribute = sec.text("rdn_attribute", "cn", check=ATTRIBUTE)
    return ContactPolicy(
        object_classes=tuple(classes),
        rdn_attribute=rdn_attribute,
        rdn_source=sec.text("rdn_source", "cn", check=ATTRIBUTE),
        attributes=_attributes(sec, rdn_attribute),
        clash_suffix=clash_suffix(sec),
    )


def _attributes(sec: Section, rdn_attribute: str | None) -> tuple[tuple[str, Template], ...]:
    mapping = sec.value("attributes", (dict,), "a mapping of contact attribute to template") or {}
    if not mapping and sec.given("attributes"):
        sec.error("attributes", "must map at least one contact attribute to a template")
    attributes: list[tuple[str, Template]] = []
    first: dict[str, str] = {}
    for name, text in mapping.items():
        path, folded = f"{sec.at('attributes')}.{name}", str(name).lower()
        problem = ATTRIBUTE(name) if isinstance(name, str) else f"expected an attribute name, got {kind_of(name)}"
        if problem:
            sec.errors.append(f"{path}: {problem}")
        elif first.setdefault(folded, name) != name:
            sec.errors.append(f"{path}: same attribute as {first[folded]!r}; LDAP attribute names ignore case")
        elif rdn_attribute is not None and folded == rdn_attribute.lower():
            sec.errors.append(f"{path}: is the rdn_attribute; its value comes from rdn_source and changes only by "
                              "renaming the contact (modrdn), so a template here would fight the rename")
        elif folded == "objectclass":
            sec.errors.append(f"{path}: set contacts.object_classes instead")
        if not isinstance(text, str):
            sec.errors.append(f"{path}: expected a template string, got {kind_of(text)}"
                              " (quote it: YAML reads unquoted TRUE, yes or 1 as non-strings)")
            continue
        try:
            attributes.append((name, Template.parse(text)))
        except TemplateError as error:
            sec.errors.append(f"{path}: {error}")
    return tuple(attributes)
