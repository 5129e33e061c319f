"""What the state store refuses, in its own terms: which record, which status, which limit.

No HTTP status, no text for people: the service layer says it to the user
(``devex.services.repls.user_error``), jobs decide what a refusal means for their work.
"""

from __future__ import annotations

from devex.models import Status


class StoreRefusal(Exception):
    """A change the store did not make; nothing of it was written."""


class ReplMissing(StoreRefusal, LookupError):
    def __init__(self, repl_id: str):
        super().__init__(f"no REPL {repl_id}")
        self.repl_id = repl_id


class StatusRefused(StoreRefusal):
    """The transition table (or the caller's narrower list) does not allow the change
    from the REPL's ``current`` status; ``target`` None: a change of fields only."""

    def __init__(self, repl_id: str, current: Status, target: Status | None):
        super().__init__(f"REPL {repl_id} is {current.value}: no change to "
                         f"{target.value if target else 'its fields'}")
        self.repl_id = repl_id
        self.current = current
        self.target = target


class NameTaken(StoreRefusal):
    """The owner has a REPL of this name already (ignoring case)."""

    def __init__(self, name: str):
        super().__init__(f"name {name!r} taken")
        self.name = name


class IdTaken(StoreRefusal):
    def __init__(self, repl_id: str):
        super().__init__(f"REPL id {repl_id} taken")
        self.repl_id = repl_id


class QuotaReached(StoreRefusal):
    """The owner has ``limit`` REPLs (``kind`` "repls") or ``limit`` starting or running
    ones (``kind`` "running") already."""

    def __init__(self, kind: str, limit: int):
        super().__init__(f"{kind} quota of {limit} reached")
        self.kind = kind
        self.limit = limit


class TooManyRetries(StoreRefusal):
    """Other changes to the same records kept coming between the checks and the write;
    trying again a moment later will do."""
