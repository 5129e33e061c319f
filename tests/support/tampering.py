"""Tokens gone bad on purpose: tampered so that the signature really changes, or signed in
the past so that they are expired without waiting."""

from __future__ import annotations

import base64
import time

from itsdangerous import TimestampSigner, URLSafeTimedSerializer


def signed_ago(key: str, repl_id: str, scope: str, seconds: int) -> str:
    """A token for ``repl_id`` and ``scope`` as if signed ``seconds`` ago."""

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - seconds

    serializer = URLSafeTimedSerializer(key, salt=f"devex-{scope}", signer=PastSigner)
    return serializer.dumps({"repl": repl_id, "scope": scope})


def signed_long_ago(key: str, repl_id: str, scope: str) -> str:
    """Signed eight days ago: expired for every purpose."""
    return signed_ago(key, repl_id, scope, 8 * 24 * 3600)


def tamper(token: str) -> str:
    """``token`` with one character in the middle of its signature changed. (The last
    base64 character also carries padding bits: changing only those leaves the signature
    as it was, and such a "tampered" token still verifies.)"""
    head, dot, signature = token.rpartition(".")
    assert dot and len(signature) > 4, token
    i = len(signature) // 2
    new = signature[:i] + ("A" if signature[i] != "A" else "B") + signature[i + 1 :]

    def raw(sig: str) -> bytes:
        return base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))

    assert raw(new) != raw(signature)  # the signed bytes really differ
    return f"{head}.{new}"
