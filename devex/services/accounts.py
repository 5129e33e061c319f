"""Who may still use Devex, and who is an administrator: the account rules.

Plain Python (no Flask). Every request checks the user's standing from the user record it
reads anyway: a suspended user (by an administrator, or by a failed GitHub re-check) gets
nothing, whatever the credential (session or personal token). In GitHub mode the user's
GitHub standing is re-checked every ``DEVEX_GITHUB_RECHECK_SECONDS`` by whichever request
comes first after that, with the user's server-side GitHub credential: revoked, expired, or
no longer passing the login rules suspends the user, and with it every personal token;
logging in through GitHub again (and passing the rules) lifts such a suspension.

Admin rights and the allow-list name people by numeric GitHub id (``id:123``) or by login.
A login is only a way to find the id: the first account to log in with that login gets it
for good (``boundLogins``), so a login renamed away and taken by another account does not
carry rights or access over to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from devex.errors import Conflict, InvalidInput, NotFound
from devex.infra.account_store import AccountStore
from devex.models import User
from devex.timestamps import utcnow

log = logging.getLogger(__name__)

ID_PREFIX = "id:"
RETRY_WHEN_DOWN = 60  # seconds before another re-check when GitHub could not answer
OK, REFUSED, DOWN = "ok", "refused", "down"


@dataclass(frozen=True)
class Entries:
    """A list setting of people or organisations: numeric ids and (lower-cased) logins."""

    ids: frozenset[str]
    names: tuple[str, ...]

    @classmethod
    def parse(cls, values: Iterable[str]) -> Entries:
        ids, names = set(), []
        for raw in values:
            value = raw.strip()
            if value.lower().startswith(ID_PREFIX):
                ids.add(value[len(ID_PREFIX):].strip())
            elif value:
                names.append(value.lower())
        return cls(frozenset(ids), tuple(dict.fromkeys(names)))

    def __bool__(self) -> bool:
        return bool(self.ids or self.names)


@dataclass(frozen=True)
class Verdict:
    """What a check of a user's GitHub standing found."""

    outcome: str  # OK | REFUSED | DOWN
    reason: str = ""


# The orgs a user belongs to, as (login, id) pairs; None when GitHub could not say.
OrgLister = Callable[[], list[tuple[str, str]] | None]


class Accounts:
    def __init__(
        self,
        store: AccountStore,
        *,
        admins: Iterable[str] = (),
        allowed_logins: Iterable[str] = (),
        allowed_orgs: Iterable[str] = (),
        recheck_seconds: float = 0,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.admins = Entries.parse(admins)
        self.allowed_logins = Entries.parse(allowed_logins)
        self.allowed_orgs = Entries.parse(allowed_orgs)
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        # Set in GitHub mode (devex.web.auth.github): checks a user's GitHub standing.
        self.checker: Callable[[User], Verdict] | None = None

    # -- every request (no extra round trip) ----------------------------------------------
    def is_admin(self, user: User) -> bool:
        if user.id in self.admins.ids:
            return True
        held = {n for n in user.held_logins.split(",") if n}
        return bool(held & set(self.admins.names))

    def in_good_standing(self, user: User) -> bool:
        if user.suspended:
            return False
        if self.checker is None or self.recheck_seconds <= 0:
            return True
        now = self.clock()
        if now - _seconds(user.standing_checked_at) < self.recheck_seconds:
            return True
        if not self.store.claim_check(user.id, now, self.recheck_seconds):
            return True  # another request is checking (or just did)
        verdict = self.checker(user)
        if verdict.outcome == OK:
            return True
        if verdict.outcome == DOWN:  # GitHub's outage is not the user's fault: retry soon
            self.store.set_checked(user.id, now - self.recheck_seconds + RETRY_WHEN_DOWN)
            return True
        log.info("user %s suspended: %s", user.id, verdict.reason)
        self.store.suspend(user.id, "github", verdict.reason, utcnow())
        return False

    # -- the login rules (at login and at every re-check) ------------------------------
    @property
    def restricted(self) -> bool:
        return bool(self.allowed_logins or self.allowed_orgs)

    def login_rules(self, user_id: str, login: str, orgs: OrgLister) -> Verdict:
        """Does GitHub user ``user_id`` (now called ``login``) pass the allow-lists?"""
        if not self.restricted or user_id in self.allowed_logins.ids:
            return Verdict(OK)
        names = self.allowed_logins.names
        if names:
            bound = self.store.bound_logins(names)
            if any(owner == user_id for owner in bound.values()):
                return Verdict(OK)
            name = login.lower()
            if name in names and name not in bound:
                if self.store.bind_login(name, user_id) == user_id:
                    return Verdict(OK)
        if self.allowed_orgs:
            memberships = orgs()
            if memberships is None:
                return Verdict(DOWN, "GitHub did not list the user's organisations")
            for org_login, org_id in memberships:
                if org_id in self.allowed_orgs.ids:
                    return Verdict(OK)
                if org_login.lower() in self.allowed_orgs.names:
                    if self.store.bind_org(org_login.lower(), org_id) == org_id:
                        return Verdict(OK)
        return Verdict(REFUSED, f"{login} is not on the allow-list")

    def record_login(self, user_id: str, login: str) -> None:
        """After a login that passed the rules: bind the configured names equal to
        ``login`` to this id (where still free), lift a suspension by a failed re-check
        (never an administrator's) and start the re-check interval afresh."""
        self.hold_names(user_id, login)
        self.store.resume(user_id, only="github")
        self.store.set_checked(user_id, self.clock())

    def hold_names(self, user_id: str, login: str) -> None:
        """Bind the configured login names equal to ``login`` to this id (where still
        free), and note on the user record which configured names it holds."""
        configured = list(dict.fromkeys([*self.admins.names, *self.allowed_logins.names]))
        if login.lower() in configured:
            self.store.bind_login(login.lower(), user_id)
        self.store.hold_logins(user_id, configured)

    # -- administrators ------------------------------------------------------------------
    def suspend(self, user_id: str, reason: str = "", *, by_id: str | None = None) -> None:
        if by_id is not None and by_id == user_id:
            raise Conflict("You cannot suspend yourself.", code="cannot_suspend_self")
        reason = (reason or "").strip()
        if len(reason) > 200 or not reason.isprintable():
            raise InvalidInput("The reason must be at most 200 printable characters.",
                               code="invalid_reason")
        if not self.store.suspend(user_id, "admin", reason or "suspended by an administrator",
                                  utcnow()):
            raise NotFound("No such user.")

    def resume(self, user_id: str) -> None:
        if not self.store.resume(user_id):
            raise NotFound("No such user.")


def _seconds(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
