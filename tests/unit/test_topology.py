import pytest

from streams.templates import Placeholder, Template, TemplateError


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("TRUE", ("TRUE",)),
        ("{mail}", (Placeholder(name="mail"),)),
        ("SMTP:{mail}", ("SMTP:", Placeholder(name="mail"))),
        ("{givenName} {sn}", (Placeholder(name="givenName"), " ", Placeholder(name="sn"))),
        ("{{literal}} {{{uid}}}", ("{literal} {", Placeholder(name="uid"), "}")),
        ("sip:{msRTCSIP-PrimaryUserAddress}", ("sip:", Placeholder(name="msRTCSIP-PrimaryUserAddress"))),
    ],
)
def test_template_parses_literals_placeholders_and_escapes(text, parts):
    assert Template.parse(text).parts == parts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{mail", "unbalanced '{' at position 0"),
        ("SMTP:mail}", "unbalanced '}' at position 9"),
        ("a{b{c}", "unbalanced '{' at position 1"),
        ("{}", "bad placeholder '{}' at position 0"),
        ("x{a.b}", "bad placeholder '{a.b}' at position 1"),
        ("{1mail}", "bad placeholder '{1mail}'"),
        ("{mail!r}", "bad placeholder '{mail!r}'"),
        ("", "empty template"),
    ],
)
def test_malformed_template_is_rejected_with_position(text, message):
    with pytest.raises(TemplateError, match="^" + message.replace("{", r"\{").replace("}", r"\}")):
        Template.parse(text)


def test_placeholders_in_first_use_order_without_repeats():
    assert Template.parse("{sn}, {givenName} <{sn}>").placeholders == ("sn", "givenName")
    assert Template.parse("TRUE").placeholders == ()


def test_render_fills_placeholders():
    assert Template.parse("SMTP:{mail}").render({"mail": "ann@a.test"}) == "SMTP:ann@a.test"
    assert Template.parse("{{{uid}}}").render({"uid": "ann"}) == "{ann}"


def test_constant_renders_without_any_attribute():
    assert Template.parse("TRUE").render({}) == "TRUE"


@pytest.mark.parametrize("values", [{}, {"mail": ""}, {"givenName": "Ann"}])
def test_missing_or_empty_attribute_renders_none(values):
    assert Template.parse("{givenName} {mail}").render(values) is None


def test_render_matches_attribute_names_ignoring_case():
    assert Template.parse("{displayName}").render({"displayname": "Ann Lee"}) == "Ann Lee"
