"""CA bundles: cleaning, ordering, duplicates and broken chains."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from recstream.errors import BundleError
from recstream.pki.bundle import Bundle, build_bundle, extract_certificates
from tests.pki_helpers import NOW, Chain, make_cert, make_chain, name, pem, rsa_key


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


def files(chain: Chain) -> dict[str, bytes]:
    return {
        "root.pem": pem(chain.root),
        "inter1.pem": pem(chain.inter1),
        "inter2.pem": pem(chain.inter2),
    }


def test_any_input_order_gives_intermediates_first_root_last(chain: Chain) -> None:
    expected = (chain.inter2, chain.inter1, chain.root)
    for order in itertools.permutations(files(chain).items()):
        bundle = build_bundle(list(order), now=NOW)
        assert bundle.certificates == expected
        assert bundle.warnings == ()
        assert bundle.to_pem() == chain.ca_file()


def test_output_is_only_pem_blocks_with_lf(chain: Chain) -> None:
    out = build_bundle(list(files(chain).items()), now=NOW).to_pem()
    assert b"\r" not in out
    assert out.count(b"-----BEGIN CERTIFICATE-----\n") == 3
    assert out.startswith(b"-----BEGIN CERTIFICATE-----\n")
    assert out.endswith(b"-----END CERTIFICATE-----\n")
    assert x509.load_pem_x509_certificates(out) == [chain.inter2, chain.inter1, chain.root]


def test_one_file_holding_the_chain_in_any_order(chain: Chain) -> None:
    mixed = pem(chain.root, chain.inter2, chain.inter1)
    assert build_bundle([("all.pem", mixed)], now=NOW).certificates[-1] == chain.root


def test_crlf_and_cr_line_endings(chain: Chain) -> None:
    inputs = [
        ("root.pem", pem(chain.root).replace(b"\n", b"\r\n")),
        ("inter1.pem", pem(chain.inter1).replace(b"\n", b"\r")),
        ("inter2.pem", pem(chain.inter2)),
    ]
    assert build_bundle(inputs, now=NOW).to_pem() == chain.ca_file()


def test_bag_attributes_and_text_dumps_are_dropped(chain: Chain) -> None:
    bag = (
        b"Bag Attributes\n"
        b"    localKeyID: 01 00 00 00\n"
        b"    friendlyName: Test Inter 1\n"
        b"subject=CN = Test Inter 1\n\n"
        b"issuer=O = Test, CN = Test Root CA\n\n"
    )
    text_dump = (
        b"Certificate:\n    Data:\n        Version: 3 (0x2)\n"
        b"        Subject: O = Test, CN = Test Root CA\n"
        b"            Modulus:\n                00:c3:aa:-----\n"
    )
    inputs = [
        ("inter1.p12.pem", bag + pem(chain.inter1) + b"\n\n"),
        ("root.txt", text_dump + pem(chain.root) + b"trailing notes\n"),
        ("inter2.pem", b"   \n" + pem(chain.inter2).replace(b"\n", b"  \n")),
    ]
    bundle = build_bundle(inputs, now=NOW)
    assert bundle.to_pem() == chain.ca_file()
    assert b"Bag Attributes" not in bundle.to_pem()  # not "Bag": base64 may contain it


def test_stretched_dashes_as_in_the_vendor_document(chain: Chain) -> None:
    stretched = (
        pem(chain.root)
        .replace(b"-----BEGIN", b"-------BEGIN")
        .replace(b"CERTIFICATE-----\n", b"CERTIFICATE----------\n")
    )
    certs, _ = extract_certificates(stretched)
    assert certs == [chain.root]


def test_duplicate_dropped_with_warning(chain: Chain) -> None:
    inputs = [*files(chain).items(), ("copy.pem", pem(chain.inter1).replace(b"\n", b"\r\n"))]
    bundle = build_bundle(inputs, now=NOW)
    assert bundle.certificates == (chain.inter2, chain.inter1, chain.root)
    assert bundle.warnings == ("copy.pem: dropped a duplicate of inter1.pem",)


def test_duplicate_inside_one_file_named_by_position(chain: Chain) -> None:
    bundle = build_bundle([("a.pem", pem(chain.root, chain.inter1, chain.root))], now=NOW)
    assert bundle.certificates == (chain.inter1, chain.root)
    assert bundle.warnings == ("a.pem #3: dropped a duplicate of a.pem #1",)


def test_missing_intermediate(chain: Chain) -> None:
    inputs = [("root.pem", pem(chain.root)), ("inter2.pem", pem(chain.inter2))]
    with pytest.raises(BundleError) as info:
        build_bundle(inputs, now=NOW)
    assert str(info.value) == (
        "missing link: 'CN=Test Inter 2' (inter2.pem) was issued by 'CN=Test Inter 1', "
        "which is not among the inputs; add that CA's certificate"
    )


def test_missing_root(chain: Chain) -> None:
    inputs = [("inter1.pem", pem(chain.inter1)), ("inter2.pem", pem(chain.inter2))]
    with pytest.raises(
        BundleError,
        match=r"missing link: 'CN=Test Inter 1' \(inter1.pem\) was issued by "
        r"'CN=Test Root CA,O=Test'",
    ):
        build_bundle(inputs, now=NOW)


def test_two_roots(chain: Chain) -> None:
    other = make_chain(prefix="Other ")
    inputs = [*files(chain).items(), ("other-root.pem", pem(other.root))]
    with pytest.raises(BundleError) as info:
        build_bundle(inputs, now=NOW)
    msg = str(info.value)
    assert msg.startswith(
        "two roots: 'CN=Test Root CA,O=Test' (root.pem) and "
        "'CN=Other Test Root CA,O=Test' (other-root.pem)"
    )
    assert "one chain ending in one root" in msg


def test_same_name_different_key(chain: Chain) -> None:
    impostor = make_cert(
        name("Test Inter 1"), rsa_key("impostor"), chain.root, chain.root_key, ca=True
    )
    inputs = [
        ("root.pem", pem(chain.root)),
        ("fake.pem", pem(impostor)),
        ("inter2.pem", pem(chain.inter2)),
    ]
    with pytest.raises(
        BundleError,
        match=r"'CN=Test Inter 2' \(inter2.pem\) names 'CN=Test Inter 1' as its issuer, "
        r"but its signature does not verify",
    ):
        build_bundle(inputs, now=NOW)


def test_two_chains_under_one_root(chain: Chain) -> None:
    sibling = make_cert(name("Sibling"), rsa_key("sibling"), chain.root, chain.root_key, ca=True)
    inputs = [*files(chain).items(), ("sibling.pem", pem(sibling))]
    with pytest.raises(
        BundleError,
        match=r"'CN=Test Inter 1' \(inter1.pem\) and 'CN=Sibling' \(sibling.pem\) are "
        r"both issued by",
    ):
        build_bundle(inputs, now=NOW)


def test_end_certificate_dropped_with_warning(chain: Chain) -> None:
    bundle = build_bundle(
        [("fullchain.pem", pem(chain.leaf, chain.inter2, chain.inter1, chain.root))], now=NOW
    )
    assert bundle.certificates == (chain.inter2, chain.inter1, chain.root)
    assert len(bundle.warnings) == 1
    assert "fullchain.pem #1: dropped 'CN=Interaction Recording" in bundle.warnings[0]
    assert "not a CA certificate" in bundle.warnings[0]
    with pytest.raises(BundleError, match=r"no CA certificates given \(only end certificates\)"):
        build_bundle([("leaf.pem", pem(chain.leaf))], now=NOW)


def test_private_key_block_dropped_with_warning(chain: Chain) -> None:
    key = chain.root_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    bundle = build_bundle([("root+key.pem", key + pem(chain.root))], now=NOW)
    assert bundle.certificates == (chain.root,)
    assert bundle.warnings == (
        "root+key.pem: dropped a private key block; never put keys in a CA file",
    )
    assert b"PRIVATE" not in bundle.to_pem()


def test_der_input(chain: Chain) -> None:
    der = chain.root.public_bytes(serialization.Encoding.DER)
    bundle = build_bundle([("root.cer", der), ("inter1.pem", pem(chain.inter1))], now=NOW)
    assert bundle.certificates == (chain.inter1, chain.root)


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        (b"", "empty.pem: no certificate found"),
        (b"hello", "empty.pem: no certificate found"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "no complete BEGIN/END CERTIFICATE block"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "certificate block 1 is damaged",
        ),
        (
            b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
            "no certificate found, only X509 CRL",
        ),
        (
            b"-----BEGIN TRUSTED CERTIFICATE-----\nAA\n-----END TRUSTED CERTIFICATE-----\n",
            "TRUSTED CERTIFICATE",
        ),
    ],
)
def test_unusable_inputs(data: bytes, expect: str) -> None:
    with pytest.raises(BundleError, match=expect):
        build_bundle([("empty.pem", data)], now=NOW)


def test_pkcs7_input_gets_a_hint(chain: Chain) -> None:
    p7 = pkcs7.serialize_certificates([chain.root], serialization.Encoding.PEM)
    with pytest.raises(BundleError, match=r"PKCS#7 bundle.*openssl pkcs7 -print_certs"):
        build_bundle([("chain.p7b", p7)], now=NOW)


def test_no_inputs() -> None:
    with pytest.raises(BundleError, match="no CA certificates given"):
        build_bundle([], now=NOW)


def test_expiry_warnings(chain: Chain) -> None:
    # inter2 ends at NOW+375d, inter1 at +385d, the root at +395d
    bundle = build_bundle(list(files(chain).items()), now=NOW + timedelta(days=380))
    assert bundle.certificates == (chain.inter2, chain.inter1, chain.root)
    assert bundle.warnings == (
        "'CN=Test Inter 2' expired on 2031-06-25 12:00:00 UTC",
        "'CN=Test Inter 1' expires in 5 days, on 2031-07-05 12:00:00 UTC",
        "'CN=Test Root CA,O=Test' expires in 15 days, on 2031-07-15 12:00:00 UTC",
    )
    assert build_bundle(list(files(chain).items()), now=NOW + timedelta(days=340)).warnings == ()


def test_bundle_value_type(chain: Chain) -> None:
    b = Bundle((chain.root,))
    with pytest.raises(AttributeError):
        b.warnings = ("x",)  # type: ignore[misc]
    assert b.to_pem() == pem(chain.root)
