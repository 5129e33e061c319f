"""Personal API tokens: create (plaintext shown once), list, revoke, authenticate.

Plain Python (no Flask). The plaintext is ``dvx_`` plus 256 random bits; only its SHA-256
is stored, so a copy of the database grants nothing. Lookups go by the hash, which is
unguessable, so no constant-time comparison of secrets is needed.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from devex.errors import InvalidInput, NotFound, QuotaExceeded
from devex.infra.api_token_store import ApiTokenLimitReached, ApiTokenStore
from devex.timestamps import format_time, parse_time

TOKEN_PREFIX = "dvx_"
NAME_MAX = 64


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


LAST_USED_EVERY = 60  # seconds between writes of a token's last_used_at


@dataclass(frozen=True)
class ApiToken:
    id: str
    user_id: str
    name: str
    created_at: str
    expires_at: str | None = None
    last_used_at: str | None = None

    def expired(self, now: datetime) -> bool:
        if not self.expires_at:
            return False
        end = parse_time(self.expires_at)
        return end is None or now >= end  # an unreadable expiry counts as passed

    def public(self, now: datetime) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "expired": self.expired(now),
        }

    @classmethod
    def from_record(cls, raw: dict[str, str]) -> ApiToken:
        return cls(
            id=raw["id"],
            user_id=raw["user_id"],
            name=raw.get("name", ""),
            created_at=raw.get("created_at", ""),
            expires_at=raw.get("expires_at") or None,
            last_used_at=raw.get("last_used_at") or None,
        )


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    plaintext: str  # shown to the user once, never stored


# A token's name: 1-64 characters once trimmed, none of them a control character or an
# invisible formatting one (zero-width, bidi overrides, BOM). One regex, also published as
# the OpenAPI ``pattern`` of the name, so both say the same. (Half a surrogate pair is no
# character at all: refused apart, as regex engines cannot name it.)
_NAME_CHAR = (r"\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
              r"\ufeff\ufff9-\ufffb")
_SURROGATE = re.compile("[\ud800-\udfff]")
NAME_PATTERN = (rf"^\s*[^\s{_NAME_CHAR}](?:[^{_NAME_CHAR}]{{0,{NAME_MAX - 2}}}"
                rf"[^\s{_NAME_CHAR}])?\s*$")


def validate_token_name(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput("The token needs a name.", code="invalid_name")
    if re.search(NAME_PATTERN, raw) is None or _SURROGATE.search(raw):
        raise InvalidInput(
            f"The token name must be at most {NAME_MAX} printable characters.",
            code="invalid_name",
        )
    name = raw.strip()
    return name


class ApiTokenService:
    def __init__(
        self,
        store: ApiTokenStore,
        *,
        per_user: int = 50,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.store = store
        self.per_user = per_user
        self.clock = clock

    def create(self, user_id: str, name: object, *, expires_at: datetime | None = None) -> NewToken:
        clean = validate_token_name(name)
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(
            id=secrets.token_hex(8),
            user_id=user_id,
            name=clean,
            created_at=format_time(self.clock()),
            expires_at=format_time(expires_at) if expires_at is not None else None,
        )
        record = {
            "id": token.id,
            "user_id": user_id,
            "name": clean,
            "created_at": token.created_at,
            "expires_at": token.expires_at or "",
            "last_used_at": "",
        }
        try:
            self.store.add(hash_token(plaintext), record, limit=self.per_user)
        except ApiTokenLimitReached:
            raise QuotaExceeded(
                f"You may hold at most {self.per_user} tokens; revoke one first.",
                headers={"Retry-After": "60"},
            ) from None
        return NewToken(token, plaintext)

    def list(self, user_id: str) -> list[ApiToken]:
        tokens = [ApiToken.from_record(r) for r in self.store.list_for_user(user_id)]
        return sorted(tokens, key=lambda t: (t.created_at, t.id), reverse=True)

    def revoke(self, user_id: str, token_id: str) -> None:
        if not self.store.revoke(user_id, token_id):
            raise NotFound("No such token.")  # another user's token looks exactly like none

    def authenticate(
        self, plaintext: str | None,
        read: Callable[[str], dict[str, str] | None] | None = None,
    ) -> ApiToken | None:
        """The token's record when the plaintext is a live token; records its use.
        ``read(token_hash)`` may fetch the record along with other reads (one round trip);
        by default the store's ``get_by_hash``."""
        if not plaintext or not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
            return None
        token_hash = hash_token(plaintext)
        raw = (read or self.store.get_by_hash)(token_hash)
        if raw is None:
            return None
        token = ApiToken.from_record(raw)
        now = self.clock()
        if token.expired(now):
            return None
        # Recorded at most once a minute: a read costs no write. (Revocation is not
        # throttled: a revoked token's record is gone, so the lookup above refuses it.)
        last = parse_time(token.last_used_at)
        if last is None or (now - last).total_seconds() >= LAST_USED_EVERY:
            self.store.touch(token_hash, format_time(now))
        return token
