"""SRTP reception (RFC 3711) through libsrtp (pylibsrtp), keyed by SDES (RFC 4568).

libsrtp does the authentication, replay protection and decryption; this module
only maps its errors: a replayed packet raises ``LookupError`` (counted as a
duplicate), anything else ``ValueError`` (counted as undecryptable).  Never
says why a packet failed beyond that.
"""

from __future__ import annotations

import pylibsrtp

__all__ = ["SrtpReceiver"]


class SrtpReceiver:
    """Decrypts one inbound SRTP stream (any SSRC) under an AES_CM_128_HMAC_SHA1_80 key."""

    def __init__(self, key: bytes) -> None:
        policy = pylibsrtp.Policy(
            key=key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
        self._session = pylibsrtp.Session(policy)

    def __call__(self, packet: bytes) -> bytes:
        try:
            return self._session.unprotect(packet)
        except pylibsrtp.Error as exc:
            if "replay" in str(exc):
                raise LookupError("replayed SRTP packet") from None
            raise ValueError("SRTP packet failed authentication") from None
