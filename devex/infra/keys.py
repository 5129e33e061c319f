"""Every Redis key name Devex uses, in one place (as rq keeps ``rq:job:``)."""

from __future__ import annotations


def repl_meta(repl_id: str) -> str:
    return f"replMeta:{repl_id}"


def user_repls(user_id: str) -> str:
    return f"userRepls:{user_id}"


def user_repl_names(user_id: str) -> str:
    """Hash: lower-cased REPL name -> id, for per-user unique names."""
    return f"userReplNames:{user_id}"


def active_session(repl_id: str) -> str:
    return f"activeSession:{repl_id}"


def repl_events(repl_id: str) -> str:
    return f"replEvents:{repl_id}"


def repl_lock(repl_id: str) -> str:
    return f"replLock:{repl_id}"


def user(user_id: str) -> str:
    return f"user:{user_id}"


def user_by_login(login: str) -> str:
    return f"userLogin:{login.lower()}"


def github_credential(user_id: str) -> str:
    """String: the user's GitHub credential, sealed (``devex.secretbox``), for re-checks."""
    return f"userGitHub:{user_id}"


# Hashes: a login name (or org login) from the settings -> the GitHub id it first resolved
# to. Set once, never overwritten: a renamed-and-retaken name does not follow its new owner.
BOUND_LOGINS = "boundLogins"
BOUND_ORGS = "boundOrgs"


def api_token(token_hash: str) -> str:
    return f"apiToken:{token_hash}"


def user_tokens(user_id: str) -> str:
    """Hash: personal token id -> the token's SHA-256 (the ``apiToken:`` key suffix)."""
    return f"userTokens:{user_id}"


# Prefixes handed to libraries that build their own keys from them.
SESSION_PREFIX = "session:"  # flask-session: session:{sid} -> the server-side session
RATE_LIMIT_PREFIX = "rateLimit"  # limits adds its own "LIMITS:" part


RUNNING_INDEX = "runningRepls"  # sorted set: repl id -> last activity (epoch), for culling
ALL_REPLS = "allRepls"  # sorted set: repl id -> created (epoch), for admin and reconcile
