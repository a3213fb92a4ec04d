"""The seam between the server and the keystore: ``[keystore]`` -> a :class:`KeyRing`.

The server takes any :class:`~recstream.envelope.KeyRing`.  :func:`open_keyring`
opens the keystore of issue 5 (``recstream.keystore``) with the password from
``password_file`` (first line) or the ``password_env`` variable, and re-reads
the file when it changes (an imported or rotated certificate is used without
a restart), through the keystore's own :class:`KeystoreResolver`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from recstream.envelope import KeyRing
from recstream.format import RecipientStanza
from recstream.service.config import KeystoreConfig
from recstream.service.errors import ServiceConfigError

__all__ = ["KeystoreKeyRing", "open_keyring", "read_keystore_password"]

KEYSTORE_FILE_NAME = "keystore.rsk"  # inside [keystore] path when that is a directory


def read_keystore_password(cfg: KeystoreConfig) -> bytes:
    """The keystore password: the first line of ``password_file``, or ``$password_env``.

    Raises:
        ServiceConfigError: the file is empty or unreadable, or the variable is unset or empty.
    """
    from recstream.errors import PasswordError
    from recstream.keysource import read_password

    try:  # the one password reader (recstream.keysource), with the config's wording
        return read_password(cfg.password_file, env=cfg.password_env)
    except OSError as exc:
        msg = f"[keystore] password_file {cfg.password_file}: {exc.strerror or exc}"
        raise ServiceConfigError(msg) from None
    except PasswordError:
        if cfg.password_file is not None:
            msg = f"[keystore] password_file {cfg.password_file} is empty"
        else:
            msg = f"[keystore] password_env: the environment variable {cfg.password_env} is not set"
        raise ServiceConfigError(msg) from None


def keystore_file(cfg: KeystoreConfig) -> Path:
    return cfg.path / KEYSTORE_FILE_NAME if cfg.path.is_dir() else cfg.path


class KeystoreKeyRing:
    """A :class:`KeyRing` over the keystore file as it is now (re-read after a change).

    Args:
        current: returns the keystore, itself a KeyRing (``KeystoreResolver.current``).
    """

    def __init__(self, current: Callable[[], KeyRing]) -> None:
        self._current = current

    def private_key_for(self, stanza: RecipientStanza) -> rsa.RSAPrivateKey | None:
        return self._current().private_key_for(stanza)

    def describe(self) -> Sequence[str]:
        return self._current().describe()

    def key_and_tenants_for(
        self, stanza: RecipientStanza
    ) -> tuple[rsa.RSAPrivateKey | None, str | None, frozenset[str]]:
        """``stanza``'s key, the tenant of the entry that gave it, and every tenant the
        keystore holds that key for (the RCS checks the recording's header against
        them): all from one reading of the keystore, so a reload in between cannot
        pair a key with no tenant (which the tenant check would have let through)."""
        store: Any = self._current()  # the keystore (recstream.keystore.Keystore)
        entry = store.entry_for(stanza)
        if entry is None:
            return None, None, frozenset()
        return store.private_key(entry), entry.tenant, store.tenants_holding(stanza)


def open_keyring(cfg: KeystoreConfig) -> KeyRing:
    """Open the keystore named by ``cfg``.

    Raises:
        ServiceConfigError: no password.
        KeystoreError and subclasses: the keystore is missing, damaged, or the
            password is wrong (raised by the keystore itself).
    """
    password = read_keystore_password(cfg)
    from recstream.keystore import KeystoreResolver

    resolver = KeystoreResolver(keystore_file(cfg), password)
    return KeystoreKeyRing(resolver.current)
