"""The keystore's content: the JSON inside the sealed container (docs/KEYSTORE.md §4).

:func:`encode` and :func:`decode` turn a :class:`~recstream.keystore.model.Keystore`
into bytes and back; :func:`decode` checks the schema strictly (exactly the known
fields, types, base64) and the invariants (one active certificate per tenant and
kind, no duplicate), so content that passed authentication but breaks a rule is
still refused.  Private keys stay as encrypted blobs here.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from recstream.errors import KeystoreFormatError
from recstream.format import MediaKind
from recstream.keystore._container import NONCE_BYTES, Unlocked
from recstream.keystore.model import (
    MAX_ENTRIES,
    Entry,
    EntryState,
    Keystore,
    check_tenant,
    parse_kind,
)
from recstream.keystore.nodes import MAX_NODES, NodeIdentity, NodeState, check_node_name
from recstream.pki.certs import certificate_id, check_recording_key, public_key_id
from recstream.pki.signing import check_signing_certificate

__all__ = ["CONTENT_VERSION", "decode", "encode", "iso_time", "parse_time"]

CONTENT_VERSION: Final = 1
# Version 2 adds "nodes" (signing identities, issue 16).  A keystore without node
# identities is still written as version 1, so older recstream keeps reading it;
# one with them is version 2, which older readers refuse instead of silently
# dropping the field on their next update.
NODES_CONTENT_VERSION: Final = 2
_NODE_FIELDS: Final = frozenset(
    {"node", "state", "added", "retired", "certificate", "key_nonce", "key"}
)
_ENTRY_FIELDS: Final = frozenset(
    {
        "tenant",
        "kind",
        "state",
        "imported",
        "activated",
        "retired",
        "certificate",
        "key_nonce",
        "key",
    }
)
_TOP_FIELDS: Final = ("content", "version", "created", "entries", "nodes")


def encode(ks: Keystore, extra: dict[str, Any] | None = None) -> bytes:
    """The content of ``ks`` (sorted keys, no whitespace), with ``extra`` top-level fields."""
    doc: dict[str, Any] = {
        "content": "recstream keystore",
        "version": CONTENT_VERSION,
        "created": iso_time(ks.created),
        "entries": [_entry_json(e) for e in ks.entries],
    }
    if len(ks.nodes):
        doc["version"] = NODES_CONTENT_VERSION
        doc["nodes"] = [_node_json(i) for i in ks.nodes.identities]
    if extra:
        doc.update(extra)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode(data: bytes, unlocked: Unlocked, what: str) -> tuple[Keystore, dict[str, Any]]:
    """Parse and check decrypted content; return the keystore and the extra fields.

    Raises:
        KeystoreFormatError: malformed, or it breaks an invariant (two active
            certificates for one tenant and kind, a duplicate).
    """
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("content") != "recstream keystore":
            _bad("not keystore content")
        version = doc.get("version")
        if version not in (CONTENT_VERSION, NODES_CONTENT_VERSION) or isinstance(version, bool):
            _bad(f"content version {version!r} is not supported")
        created = parse_time(doc.get("created"))
        raw_entries = doc.get("entries")
        if not isinstance(raw_entries, list) or len(raw_entries) > MAX_ENTRIES:
            _bad(f"entries is not a list of at most {MAX_ENTRIES}")
        entries = [_entry_from_json(item) for item in raw_entries]
        nodes = _nodes_from_json(doc, version)
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        msg = f"{what} content is malformed: {exc}"
        raise KeystoreFormatError(msg) from exc
    _check_invariants(entries, what)
    _check_node_invariants(nodes, what)
    extra = {k: v for k, v in doc.items() if k not in _TOP_FIELDS}
    return Keystore(unlocked, entries, created=created, nodes=nodes), extra


def iso_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        msg = f"time {value!r} is not a string"
        raise ValueError(msg)
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object) -> bytes:
    if not isinstance(value, str):
        msg = f"{value!r} is not base64 text"
        raise ValueError(msg)
    return base64.b64decode(value, validate=True)


def _bad(msg: str) -> None:
    raise ValueError(msg)


def _entry_json(e: Entry) -> dict[str, Any]:
    return {
        "tenant": e.tenant,
        "kind": e.kind_name,
        "state": e.state.value,
        "imported": iso_time(e.imported),
        "activated": iso_time(e.activated) if e.activated else None,
        "retired": iso_time(e.retired) if e.retired else None,
        "certificate": _b64(e.certificate.public_bytes(serialization.Encoding.DER)),
        "key_nonce": _b64(e.key_nonce),
        "key": _b64(e.key_blob),
    }


def _entry_from_json(item: object) -> Entry:
    if not isinstance(item, dict) or set(item) != _ENTRY_FIELDS:
        msg = f"an entry has fields {sorted(item) if isinstance(item, dict) else item!r}"
        raise ValueError(msg)
    tenant = item["tenant"]
    if not isinstance(tenant, str):
        msg = "tenant is not text"
        raise ValueError(msg)
    cert = x509.load_der_x509_certificate(_unb64(item["certificate"]))
    nonce, blob = _sealed_key(item, "private key")
    return Entry(
        tenant=check_tenant(tenant),
        kind=parse_kind(item["kind"]),
        certificate=cert,
        cert_id=certificate_id(cert),
        key_id=public_key_id(check_recording_key(cert.public_key())),
        state=EntryState(item["state"]),
        imported=parse_time(item["imported"]),
        activated=None if item["activated"] is None else parse_time(item["activated"]),
        retired=None if item["retired"] is None else parse_time(item["retired"]),
        key_nonce=nonce,
        key_blob=blob,
    )


def _sealed_key(item: dict[str, Any], what: str) -> tuple[bytes, bytes]:
    """An item's sealed key: its nonce and its AEAD blob (at least the 16-byte tag + 1)."""
    nonce, blob = _unb64(item["key_nonce"]), _unb64(item["key"])
    if len(nonce) != NONCE_BYTES or len(blob) < 17:
        msg = f"a {what} field has the wrong size"
        raise ValueError(msg)
    return nonce, blob


def _node_json(i: NodeIdentity) -> dict[str, Any]:
    return {
        "node": i.node,
        "state": i.state.value,
        "added": iso_time(i.added),
        "retired": iso_time(i.retired) if i.retired else None,
        "certificate": _b64(i.certificate.public_bytes(serialization.Encoding.DER)),
        "key_nonce": _b64(i.key_nonce),
        "key": _b64(i.key_blob),
    }


def _nodes_from_json(doc: dict[str, Any], version: int) -> list[NodeIdentity]:
    if version == CONTENT_VERSION:
        if "nodes" in doc:
            _bad("nodes is not allowed in content version 1")
        return []
    raw = doc.get("nodes")
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_NODES:
        msg = f"nodes is not a list of 1 to {MAX_NODES}"
        raise ValueError(msg)
    return [_node_from_json(item) for item in raw]


def _node_from_json(item: object) -> NodeIdentity:
    if not isinstance(item, dict) or set(item) != _NODE_FIELDS:
        msg = f"a node identity has fields {sorted(item) if isinstance(item, dict) else item!r}"
        raise ValueError(msg)
    node = item["node"]
    if not isinstance(node, str):
        msg = "node is not text"
        raise ValueError(msg)
    cert = x509.load_der_x509_certificate(_unb64(item["certificate"]))
    check_signing_certificate(cert)
    nonce, blob = _sealed_key(item, "signing key")
    return NodeIdentity(
        node=check_node_name(node),
        certificate=cert,
        cert_id=certificate_id(cert),
        state=NodeState(item["state"]),
        added=parse_time(item["added"]),
        retired=None if item["retired"] is None else parse_time(item["retired"]),
        key_nonce=nonce,
        key_blob=blob,
    )


def _check_node_invariants(nodes: list[NodeIdentity], what: str) -> None:
    seen: set[str] = set()
    active: set[str] = set()
    for i in nodes:
        if i.cert_id in seen:
            msg = f"{what} lists {i.label()} twice"
            raise KeystoreFormatError(msg)
        seen.add(i.cert_id)
        if i.state is NodeState.ACTIVE:
            if i.node in active:
                msg = f"{what} has two active signing identities for node {i.node}"
                raise KeystoreFormatError(msg)
            active.add(i.node)


def _check_invariants(entries: list[Entry], what: str) -> None:
    seen: set[tuple[str, MediaKind, str]] = set()
    active: set[tuple[str, MediaKind]] = set()
    for e in entries:
        slot = (e.tenant, e.kind)
        if (*slot, e.cert_id) in seen:
            msg = f"{what} lists {e.label()} twice"
            raise KeystoreFormatError(msg)
        seen.add((*slot, e.cert_id))
        if e.state is EntryState.ACTIVE:
            if slot in active:
                msg = f"{what} has two active {e.kind_name} certificates for {e.tenant}"
                raise KeystoreFormatError(msg)
            active.add(slot)
