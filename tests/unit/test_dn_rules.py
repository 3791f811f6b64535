"""DNs compared in canonical form: a directory's own escaping never looks like a rename."""

from __future__ import annotations

import pytest

from streams.rules.dn import DnError, canonical, escape_value, is_below, rdn_and_parent, same_dn

HARD_NAMES = ['Smith, Ada', 'A+B', 'Say "hi"', 'back\\slash', '#hash', ' padded ', 'semi;colon', 'Zoë <x>']


@pytest.mark.parametrize("name", HARD_NAMES)
def test_an_escaped_name_reads_back_as_itself(name):
    dn = f"cn={escape_value(name)},ou=gal,dc=x"
    assert canonical(dn)[0] == (("cn", name),)


def test_hex_escapes_as_slapd_returns_them_equal_backslash_escapes():
    assert same_dn("cn=Smith\\2C Ada,ou=gal,dc=x", "CN=Smith\\, Ada, OU=gal,dc=x")
    assert same_dn("cn=Zo\\C3\\AB,dc=x", "cn=Zoë,dc=x")
    assert same_dn("cn=a\\2Bb,dc=x", "cn=a\\+b,dc=x")


def test_value_case_is_a_real_difference_and_multi_valued_rdns_ignore_order():
    assert not same_dn("cn=ada,dc=x", "cn=Ada,dc=x")
    assert same_dn("cn=a+uid=b,dc=x", "uid=b+cn=a,dc=x")


def test_parent_and_below():
    assert rdn_and_parent("cn=Smith\\, Ada,ou=gal,dc=x") == ("cn=Smith\\, Ada", "ou=gal,dc=x")
    assert is_below("cn=a,OU=Gal,dc=x", "ou=gal,dc=x")
    assert not is_below("cn=a,ou=other,dc=x", "ou=gal,dc=x")


def test_malformed_dns_are_refused():
    with pytest.raises(DnError):
        canonical("no-equals-sign,dc=x")
    with pytest.raises(DnError):
        canonical("cn=trailing\\")
