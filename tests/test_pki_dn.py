"""DN validation: every field required, each problem with its own message."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from recstream.errors import CertificateRequestError, SubjectFieldsError
from recstream.pki._iso3166 import COMMON_MISTAKES, COUNTRY_NAMES, STATE_ABBREVIATIONS
from recstream.pki.dn import SubjectFields, ca_subject, check_country
from tests.pki_helpers import FULL_DN, full_name


def parse(**changes: str | None) -> SubjectFields:
    return SubjectFields.parse(**{**FULL_DN, **changes})  # type: ignore[arg-type]


def problem(**changes: str | None) -> CertificateRequestError:
    with pytest.raises(CertificateRequestError) as info:
        parse(**changes)
    assert not isinstance(info.value, SubjectFieldsError)
    return info.value


def test_full_dn_in_openssl_order() -> None:
    subject = parse()
    name = subject.to_name()
    assert [a.oid for a in name] == [
        NameOID.COUNTRY_NAME,
        NameOID.STATE_OR_PROVINCE_NAME,
        NameOID.LOCALITY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.COMMON_NAME,
    ]
    assert name == full_name()


def test_whitespace_dropped_and_country_upper_cased() -> None:
    subject = parse(country=" us ", locality="  Pleasant Hill ")
    assert subject.country == "US"
    assert subject.locality == "Pleasant Hill"


@pytest.mark.parametrize(
    ("field", "label", "example"),
    [
        ("common_name", "common name (CN)", "Interaction Recording"),
        ("organization", "organization (O)", "Monster & Sons, Inc."),
        ("organizational_unit", "organizational unit (OU)", "Robot Repairs"),
        ("locality", "locality (L)", "Pleasant Hill"),
        ("state", "state or province (ST)", "California"),
        ("country", "country (C)", "US"),
    ],
)
@pytest.mark.parametrize("missing", [None, "", "   "])
def test_each_missing_field_has_its_own_message(
    field: str, label: str, example: str, missing: str | None
) -> None:
    err = problem(**{field: missing})
    assert err.field == field
    assert str(err).startswith(f"the {label} is missing")
    assert repr(example) in str(err)


def test_missing_messages_all_differ() -> None:
    messages = {str(problem(**{f: None})) for f in FULL_DN}
    assert len(messages) == len(FULL_DN)


def test_several_problems_reported_together_in_dn_order() -> None:
    with pytest.raises(SubjectFieldsError) as info:
        parse(common_name=None, state="CA", country="XX")
    assert [p.field for p in info.value.problems] == ["country", "state", "common_name"]
    assert info.value.field is None
    assert "3 subject (DN) fields" in str(info.value)
    for p in info.value.problems:
        assert str(p) in str(info.value)


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ("XX", "'XX' is not an assigned ISO 3166 country code"),
        ("UK", "'UK' is not an ISO 3166 code; the United Kingdom is GB"),
        ("EL", "Greece is GR"),
        ("USA", "'USA' is not a two-letter ISO 3166 code"),
        ("U1", "'U1' is not a two-letter ISO 3166 code"),
        ("Germany", "not the name: use DE for Germany"),
        ("ÜS", "not a two-letter ISO 3166 code"),
    ],
)
def test_invalid_country(value: str, expect: str) -> None:
    err = problem(country=value)
    assert err.field == "country"
    assert expect in str(err)


def test_common_mistakes_point_at_assigned_codes() -> None:
    for wrong, (meant, _) in COMMON_MISTAKES.items():
        assert wrong not in COUNTRY_NAMES
        assert meant in COUNTRY_NAMES


def test_country_codes_are_the_iso_list() -> None:
    assert len(COUNTRY_NAMES) == 249
    assert all(len(c) == 2 and c.isascii() and c.isupper() for c in COUNTRY_NAMES)
    for code in ("US", "GB", "DE", "FR", "IN", "AU", "CA", "JP", "BR", "ZA", "CI", "SS"):
        assert check_country(code) == code
    for code in ("UK", "EU", "XK", "AN", "YU"):  # reserved, transitional or withdrawn
        assert code not in COUNTRY_NAMES


@pytest.mark.parametrize(
    ("state", "country", "expect"),
    [
        ("CA", "US", "'CA' is an abbreviation; spell it in full ('California')"),
        ("ny", "US", "'New York'"),
        ("ON", "CA", "'Ontario'"),
        ("NSW", "AU", "'New South Wales'"),
        ("Qld", "AU", "'Queensland'"),
        ("TX", "GB", "'Texas'"),  # an abbreviation even when the country is something else
        ("ZZ", "US", "'ZZ' looks abbreviated; spell the state or province in full"),
        ("B.", "DE", "looks abbreviated"),
    ],
)
def test_abbreviated_state_refused(state: str, country: str, expect: str) -> None:
    err = problem(state=state, country=country)
    assert err.field == "state"
    assert expect in str(err)


def test_abbreviations_table_holds_full_names() -> None:
    for table in STATE_ABBREVIATIONS.values():
        for abbreviation, full in table.items():
            assert len(full) > 3, abbreviation
            assert parse(state=full).state == full


def test_full_state_names_accepted() -> None:
    assert parse(state="Bavaria", country="DE").state == "Bavaria"
    assert parse(state="Île-de-France", country="FR").state == "Île-de-France"


@pytest.mark.parametrize(
    ("field", "limit"),
    [("common_name", 64), ("organization", 64), ("organizational_unit", 64),
     ("locality", 128), ("state", 128)],
)  # fmt: skip
def test_length_limits(field: str, limit: int) -> None:
    assert getattr(parse(**{field: "a" * limit}), field) == "a" * limit
    err = problem(**{field: "a" * (limit + 1)})
    assert err.field == field
    assert f"{limit + 1} characters long, over the limit of {limit}" in str(err)


@pytest.mark.parametrize("bad", ["Robot\nRepairs", "Robot\x00", "Robot\u200bRepairs"])
def test_control_characters_refused(bad: str) -> None:
    err = problem(organizational_unit=bad)
    assert err.field == "organizational_unit"
    assert "control or invisible formatting character" in str(err)


def test_from_name_accepts_complete_subject() -> None:
    assert SubjectFields.from_name(full_name()) == parse()


def test_from_name_reports_missing_fields() -> None:
    partial = x509.Name([a for a in full_name() if a.oid != NameOID.ORGANIZATIONAL_UNIT_NAME])
    with pytest.raises(CertificateRequestError) as info:
        SubjectFields.from_name(partial)
    assert info.value.field == "organizational_unit"
    assert "organizational unit (OU) is missing" in str(info.value)


def test_from_name_refuses_repeated_field_and_collects_problems() -> None:
    attrs = list(full_name())
    attrs.append(x509.NameAttribute(NameOID.LOCALITY_NAME, "Walnut Creek"))
    attrs[0] = x509.NameAttribute(NameOID.COUNTRY_NAME, "UK")
    with pytest.raises(SubjectFieldsError) as info:
        SubjectFields.from_name(x509.Name(attrs), what="the CSR")
    fields = [p.field for p in info.value.problems]
    assert sorted(fields) == ["country", "locality"]
    assert "the CSR has 2 locality (L) values" in str(info.value)


def test_ca_subject() -> None:
    assert ca_subject("Root") == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Root")])
    full = ca_subject("Root", organization="Org", organizational_unit="PKI", country="de")
    assert full.rfc4514_string() == "CN=Root,OU=PKI,O=Org,C=DE"
    with pytest.raises(CertificateRequestError) as info:
        ca_subject(None)
    assert info.value.field == "common_name"
    with pytest.raises(SubjectFieldsError):
        ca_subject("", country="UK")
