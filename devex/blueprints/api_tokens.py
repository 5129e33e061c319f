"""Personal API tokens: ``GET/POST /api/tokens``, ``DELETE /api/tokens/<id>``.

Managing tokens needs a logged-in session (with its CSRF token): a personal token can
neither mint, list nor revoke tokens, so a leaked one cannot lock its owner out of their
other tokens, see which exist, or make itself harder to get rid of."""

from __future__ import annotations

from datetime import timedelta

from apiflask import APIBlueprint

from devex.web.schemas.api_tokens import TokenCreated, TokenCreateIn, TokenList
from devex.web.security import auth_ext, require_session_actor

# Still named "tokens": endpoint names are labels of the request metrics.
bp = APIBlueprint("tokens", __name__, url_prefix="/api", tag="Personal tokens")

COMMON = {
    401: "Not logged in",
    403: "CSRF token missing or wrong, or called with a token instead of a session",
}


@bp.before_request
def _authenticate():
    require_session_actor()


@bp.get("/tokens")
@bp.output(TokenList)
@bp.doc(summary="My personal API tokens (never their plaintext)", responses=COMMON)
def list_tokens():
    actor = require_session_actor()
    svc = auth_ext().api_tokens
    now = svc.clock()
    return {"tokens": [t.public(now) for t in svc.list(actor.id)]}


@bp.post("/tokens")
@bp.input(TokenCreateIn, arg_name="data")
@bp.output(TokenCreated, status_code=201)
@bp.doc(
    summary="Create a personal API token; its plaintext is shown this once",
    responses={**COMMON, 429: "Too many tokens"},
)
def create_token(data):
    actor = require_session_actor()
    svc = auth_ext().api_tokens
    expires = None
    if data.get("expires_in_days"):
        expires = svc.clock() + timedelta(days=data["expires_in_days"])
    new = svc.create(actor.id, data["name"], expires_at=expires)
    return {**new.token.public(svc.clock()), "token": new.plaintext}, 201


@bp.delete("/tokens/<token_id>")
@bp.output({}, status_code=204)
@bp.doc(summary="Revoke a personal API token", responses={**COMMON, 404: "No such token"})
def revoke_token(token_id: str):
    actor = require_session_actor()
    auth_ext().api_tokens.revoke(actor.id, token_id)
    return "", 204
