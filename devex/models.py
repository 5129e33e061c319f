"""Plain data: REPL statuses, the transition table, and the records kept in Redis."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from devex_shared.redact import redact


class Status(StrEnum):
    CREATING = "creating"
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    DELETING = "deleting"
    FAILED = "failed"


class Desired(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    DELETED = "deleted"


# The one table of allowed status changes; the store enforces it atomically.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.CREATING: frozenset({Status.STOPPED, Status.STARTING, Status.FAILED, Status.DELETING}),
    Status.STOPPED: frozenset({Status.STARTING, Status.DELETING}),
    Status.STARTING: frozenset({Status.RUNNING, Status.STOPPING, Status.FAILED, Status.DELETING}),
    Status.RUNNING: frozenset({Status.STOPPING, Status.FAILED, Status.DELETING}),
    Status.STOPPING: frozenset({Status.STOPPED, Status.FAILED, Status.DELETING}),
    Status.FAILED: frozenset({Status.STARTING, Status.STOPPING, Status.DELETING}),
    Status.DELETING: frozenset({Status.FAILED}),
}

# What a runner reports of its autosave (runner/autosave.py), in heartbeats.
AUTOSAVE_STATES = ("saved", "saving", "pending", "error", "off")

TRANSITIONAL = frozenset({Status.CREATING, Status.STARTING, Status.STOPPING, Status.DELETING})


def allowed_sources(target: Status) -> frozenset[Status]:
    """Statuses from which ``target`` may be entered."""
    return frozenset(src for src, dests in TRANSITIONS.items() if target in dests)


@dataclass
class Repl:
    id: str
    name: str
    template: str
    owner_id: str
    owner_login: str
    storage_prefix: str
    status: Status = Status.CREATING
    desired: Desired = Desired.STOPPED
    error: str | None = None
    url: str | None = None
    created_at: str = ""
    updated_at: str = ""
    last_activity_at: str | None = None
    runtime: dict[str, str] = field(default_factory=dict)  # names of runtime objects

    def to_hash(self) -> dict[str, str]:
        data = asdict(self)
        data["status"] = self.status.value
        data["desired"] = self.desired.value
        data["runtime"] = json.dumps(self.runtime, sort_keys=True)
        return {k: ("" if v is None else str(v)) for k, v in data.items()}

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Repl:
        return cls(
            id=raw["id"],
            name=raw["name"],
            template=raw["template"],
            owner_id=raw["owner_id"],
            owner_login=raw["owner_login"],
            storage_prefix=raw["storage_prefix"],
            status=Status(raw.get("status", "failed")),
            desired=Desired(raw.get("desired", "stopped")),
            error=redact(raw["error"]) if raw.get("error") else None,  # older records too
            url=raw.get("url") or None,
            created_at=raw.get("created_at", ""),
            updated_at=raw.get("updated_at", ""),
            last_activity_at=raw.get("last_activity_at") or None,
            runtime=json.loads(raw.get("runtime") or "{}"),
        )

    def public(self) -> dict:
        """The contract's ``Repl`` object."""
        return {
            "id": self.id,
            "name": self.name,
            "template": self.template,
            "status": self.status.value,
            "desired": self.desired.value,
            "url": self.url if self.status == Status.RUNNING else None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_activity_at": self.last_activity_at,
            "error": self.error if self.status == Status.FAILED else None,
        }


@dataclass
class User:
    id: str
    login: str
    name: str = ""
    avatar_url: str = ""
    first_login_at: str = ""
    last_login_at: str = ""
    # Standing (written by devex.infra.account_store, read with the user on every request):
    suspended: str = ""  # "" | "admin" (by an administrator) | "github" (failed re-check)
    suspended_reason: str = ""
    suspended_at: str = ""
    standing_checked_at: str = ""  # epoch seconds of the last GitHub re-check
    held_logins: str = ""  # comma-separated configured login names bound to this id

    def to_hash(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> User:
        names = cls.__dataclass_fields__  # read on every authenticated request
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass(frozen=True)
class Event:
    at: str
    kind: str
    message: str
    actor: str = "system"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Event:
        return cls(**json.loads(raw))
