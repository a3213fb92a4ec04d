"""Distinguished names for recording certificates and CAs, validated field by field.

The vendor document requires every DN field of a recording certificate's request:

====================  =====  ==============================================  ======================
field                 attr   meaning                                         example
====================  =====  ==============================================  ======================
Common Name           CN     name of the recording solution                  Interaction Recording
Organization          O      exact legal name, not abbreviated               Monster & Sons, Inc.
Organization Unit     OU     section of the organization                     Robot Repairs
City or Locality      L      city where the organization is legally located  Pleasant Hill
State or Province     ST     full state or province name                     California
Country               C      two-letter ISO 3166 code                        US
====================  =====  ==============================================  ======================

Lengths are the X.520 upper bounds of RFC 5280 appendix A.1 (``ub-common-name`` 64 and
so on).  Every problem gets its own :class:`~recstream.errors.CertificateRequestError`
naming its field; several at once are reported together in a
:class:`~recstream.errors.SubjectFieldsError`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from recstream.errors import CertificateRequestError, SubjectFieldsError
from recstream.pki._iso3166 import COMMON_MISTAKES, COUNTRY_NAMES, STATE_ABBREVIATIONS

__all__ = ["SubjectFields", "ca_subject", "check_country"]


@dataclass(frozen=True, slots=True)
class _Field:
    attr: str
    oid: x509.ObjectIdentifier
    label: str
    meaning: str
    example: str
    max_length: int


# In the order openssl prompts for them and writes them (C first, CN last).
_FIELDS = (
    _Field("country", NameOID.COUNTRY_NAME, "country (C)", "the two-letter ISO 3166 code", "US", 2),
    _Field(
        "state",
        NameOID.STATE_OR_PROVINCE_NAME,
        "state or province (ST)",
        "the full name of the state or province where the organization is legally located",
        "California",
        128,
    ),
    _Field(
        "locality",
        NameOID.LOCALITY_NAME,
        "locality (L)",
        "the city where the organization is legally located",
        "Pleasant Hill",
        128,
    ),
    _Field(
        "organization",
        NameOID.ORGANIZATION_NAME,
        "organization (O)",
        "the exact legal name of the organization, not abbreviated",
        "Monster & Sons, Inc.",
        64,
    ),
    _Field(
        "organizational_unit",
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        "organizational unit (OU)",
        "the section of the organization",
        "Robot Repairs",
        64,
    ),
    _Field(
        "common_name",
        NameOID.COMMON_NAME,
        "common name (CN)",
        "the name of the recording solution",
        "Interaction Recording",
        64,
    ),
)
_BY_ATTR = {f.attr: f for f in _FIELDS}


@dataclass(frozen=True, slots=True)
class SubjectFields:
    """The six DN fields of a recording certificate, all present and valid.

    Build one with :meth:`parse` (from user input) or :meth:`from_name` (from a
    CSR's subject); both validate, so an instance is always complete.
    """

    common_name: str
    organization: str
    organizational_unit: str
    locality: str
    state: str
    country: str

    @classmethod
    def parse(
        cls,
        *,
        common_name: str | None,
        organization: str | None,
        organizational_unit: str | None,
        locality: str | None,
        state: str | None,
        country: str | None,
    ) -> SubjectFields:
        """Validate user input; surrounding whitespace is dropped, the country upper-cased.

        Raises:
            CertificateRequestError: exactly one field is missing or invalid
                (``field`` names it: ``"common_name"``, ``"state"``, ...).
            SubjectFieldsError: several are; ``problems`` holds one error per field.
        """
        raw = {
            "common_name": common_name,
            "organization": organization,
            "organizational_unit": organizational_unit,
            "locality": locality,
            "state": state,
            "country": country,
        }
        values: dict[str, str] = {}
        problems: list[CertificateRequestError] = []
        for f in _FIELDS:
            try:
                values[f.attr] = _check_field(f, raw[f.attr], raw["country"])
            except CertificateRequestError as exc:
                problems.append(exc)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise SubjectFieldsError(problems)
        return cls(**values)

    @classmethod
    def from_name(cls, name: x509.Name, *, what: str = "the request") -> SubjectFields:
        """Validate an existing subject, e.g. of a CSR made by openssl.

        Raises:
            CertificateRequestError: one field is missing, repeated or invalid.
            SubjectFieldsError: several are.
        """
        found: dict[str, str | None] = {}
        problems: list[CertificateRequestError] = []
        for f in _FIELDS:
            attrs = name.get_attributes_for_oid(f.oid)
            if len(attrs) > 1:
                msg = f"{what} has {len(attrs)} {f.label} values; give exactly one"
                problems.append(CertificateRequestError(msg, f.attr))
            value = attrs[0].value if attrs else None
            found[f.attr] = value if isinstance(value, str) else None
        try:
            parsed = cls.parse(**found)
        except SubjectFieldsError as exc:
            problems.extend(exc.problems)
        except CertificateRequestError as exc:
            problems.append(exc)
        else:
            if not problems:
                return parsed
        if len(problems) == 1:
            raise problems[0]
        raise SubjectFieldsError(problems)

    def to_name(self) -> x509.Name:
        """The subject as an X.509 name, C first and CN last (openssl's order)."""
        return x509.Name([x509.NameAttribute(f.oid, getattr(self, f.attr)) for f in _FIELDS])


def ca_subject(
    common_name: str | None,
    *,
    organization: str | None = None,
    organizational_unit: str | None = None,
    country: str | None = None,
) -> x509.Name:
    """A CA's subject: a common name, and optionally organization, unit and country.

    Raises:
        CertificateRequestError: a field given is empty or invalid (one at a time).
        SubjectFieldsError: several are.
    """
    given = {
        "country": country,
        "organization": organization,
        "organizational_unit": organizational_unit,
        "common_name": common_name,
    }
    attributes: list[x509.NameAttribute[str]] = []
    problems: list[CertificateRequestError] = []
    for attr, value in given.items():
        if value is None and attr != "common_name":
            continue
        f = _BY_ATTR[attr]
        try:
            attributes.append(x509.NameAttribute(f.oid, _check_field(f, value, country)))
        except CertificateRequestError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise SubjectFieldsError(problems)
    return x509.Name(attributes)


def check_country(value: str) -> str:
    """Return ``value`` as an upper-case ISO 3166-1 alpha-2 code.

    Raises:
        CertificateRequestError: not an assigned two-letter code (``field="country"``).
    """
    code = value.strip().upper()
    if code in COUNTRY_NAMES:
        return code
    if code in COMMON_MISTAKES:
        meant, country = COMMON_MISTAKES[code]
        msg = f"country (C) {value.strip()!r} is not an ISO 3166 code; {country} is {meant}"
        raise CertificateRequestError(msg, "country")
    by_name = {n.casefold(): c for c, n in COUNTRY_NAMES.items()}
    if code.casefold() in by_name:
        msg = (
            f"country (C) must be the two-letter ISO 3166 code, not the name: "
            f"use {by_name[code.casefold()]} for {value.strip()}"
        )
        raise CertificateRequestError(msg, "country")
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        msg = (
            f"country (C) {value.strip()!r} is not a two-letter ISO 3166 code "
            "(for example US, GB, DE, FR, IN, AU)"
        )
        raise CertificateRequestError(msg, "country")
    msg = f"country (C) {code!r} is not an assigned ISO 3166 country code"
    raise CertificateRequestError(msg, "country")


def _check_field(f: _Field, value: str | None, country: str | None) -> str:
    if value is None or not value.strip():
        msg = f"the {f.label} is missing: give {f.meaning}, e.g. {f.example!r}"
        raise CertificateRequestError(msg, f.attr)
    text = value.strip()
    if f.attr == "country":
        return check_country(text)
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text):
        msg = f"the {f.label} contains a control or invisible formatting character"
        raise CertificateRequestError(msg, f.attr)
    if len(text) > f.max_length:
        msg = (
            f"the {f.label} is {len(text)} characters long, over the limit of "
            f"{f.max_length} (RFC 5280)"
        )
        raise CertificateRequestError(msg, f.attr)
    if f.attr == "state":
        _check_state(text, country)
    return text


def _check_state(text: str, country: str | None) -> None:
    key = text.rstrip(".").upper()
    full = STATE_ABBREVIATIONS.get((country or "").strip().upper(), {}).get(key)
    if full is None and len(key) <= 2:
        # a two-letter abbreviation of another country's state (or the country is wrong)
        full = next((t[key] for t in STATE_ABBREVIATIONS.values() if key in t), None)
    if full is not None:
        msg = f"the state or province (ST) {text!r} is an abbreviation; spell it in full ({full!r})"
        raise CertificateRequestError(msg, "state")
    if len(key) <= 2:
        msg = (
            f"the state or province (ST) {text!r} looks abbreviated; spell the "
            "state or province in full, e.g. 'California', not 'CA'"
        )
        raise CertificateRequestError(msg, "state")
