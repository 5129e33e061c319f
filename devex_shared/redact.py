"""Credentials out of every message a person sees (REPL errors, events, health answers).

Library errors quote what they were given: botocore names the endpoint URL, so an endpoint
configured as ``https://user:password@minio:9000`` would show its password in a REPL's
error and events. ``redact`` removes the user-info part of every URL in a text and any
known secret value. No Flask or Redis here: the runner's storage code uses it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# scheme://user[:password]@  ->  scheme://***@   (user-info never contains "/", "@" or spaces)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/@\s'\"<>]+@")
# key=value pairs that name a secret (query strings, botocore's messages, env dumps)
_SECRET_PAIR = re.compile(
    r"(?i)\b((?:aws_)?(?:secret_access_key|access_key_id|session_token|password|passwd|"
    r"client_secret|access_token|x-amz-signature|x-amz-credential))"
    r"(\s*[=:]\s*)([^\s&'\",;]+)"
)


def redact(text: object, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL credentials, ``secret=value`` pairs and the given ``secrets``
    (values of at least 4 characters) masked."""
    message = _USERINFO.sub(rf"\1{MASK}@", str(text))
    message = _SECRET_PAIR.sub(rf"\1\2{MASK}", message)
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        message = message.replace(secret, MASK)
    return message
