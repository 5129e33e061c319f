"""Encryption at rest for the few secrets Devex must keep (a user's GitHub credential).

``cryptography``'s Fernet (AES-128-CBC + HMAC-SHA256, with a timestamp) does the work; its
key is derived from ``DEVEX_SECRET_KEY`` with HKDF and a purpose label, so each use gets its
own key and none of them is the secret key itself. A copy of Redis (or of embedded mode's
append-only file) then holds only ciphertext. Changing ``DEVEX_SECRET_KEY`` makes what was
sealed unreadable: ``open`` answers None and callers treat that as "no secret on file".
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(secret_key: str, purpose: str) -> bytes:
    """A Fernet key for ``purpose``, derived from the service's secret key."""
    if not secret_key:
        raise ValueError("a secret key is needed to derive an encryption key")
    raw = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"devex-secretbox", info=purpose.encode()
    ).derive(secret_key.encode())
    return base64.urlsafe_b64encode(raw)


class SecretBox:
    """Seal and open small secrets with a key derived for one purpose."""

    def __init__(self, secret_key: str, purpose: str):
        self._fernet = Fernet(derive_key(secret_key, purpose))

    def seal(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def open(self, sealed: bytes | None) -> bytes | None:
        """The plaintext, or None when there is nothing, it was tampered with, or it was
        sealed under another secret key."""
        if not sealed:
            return None
        try:
            return self._fernet.decrypt(sealed)
        except InvalidToken:
            return None
