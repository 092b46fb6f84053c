"""token_type on <prefix>sess:<id> (docs/redis-contract.md): absent or
`opaque`, the session id is the credential and the opaque check accepts it;
`jwt`, the id is an identity provider's session id (in every token's sid
claim, visible to the browser), which the opaque check refuses as `invalid`;
any other value is refused too (fail closed)."""

import pytest

from harness import (METRICS_LOCATION, app_location, bearer, cookie, now_ms, redis_directive,
                     seed_session, seed_user)


def start(nginx, rds, directives="", http=""):
    return nginx(http=redis_directive(rds.address()) + http,
                 server=app_location("/app/", directives)
                 + app_location("/admin/", directives + " session_require_role admin;")
                 + METRICS_LOCATION)


@pytest.mark.parametrize("token_type", [None, "opaque"])
def test_opaque_or_absent_is_the_credential(nginx, rds, r, upstream, token_type):
    seed_session(r, "sess_op", "user_1", token_type=token_type)
    assert r.hexists("sess:sess_op", "token_type") == (token_type is not None)
    seed_user(r, "user_1", role="admin")
    n = start(nginx, rds)
    for headers in (cookie("sess_op"), bearer("sess_op")):
        resp = n.get("/admin/", headers=headers)
        assert resp.status == 200, resp
        assert resp.upstream_header("X-User-Id") == "user_1"
        assert n.last_session_status() == "ok"


@pytest.mark.parametrize("token_type", ["jwt", "JWT", "", "opaque ", "bearer"])
def test_other_token_types_are_refused_as_invalid(nginx, rds, r, upstream, token_type):
    seed_session(r, "sess_idp", "user_1", status="active", token_type=token_type)
    seed_user(r, "user_1", role="admin")
    n = start(nginx, rds)
    for headers in (bearer("sess_idp"), cookie("sess_idp")):
        resp = n.get("/admin/", headers=headers)
        assert resp.status == 401, resp
        assert resp.header("WWW-Authenticate", "").startswith("Bearer")
        assert n.last_session_status() == "invalid"
    assert upstream.requests == []


def test_syncd_hashes_are_refused_and_never_touched(nginx, rds, r, upstream):
    # Exactly what syncd projects for a live Clerk session, and for one that
    # ended: neither makes the bare session id a credential.
    last_active = now_ms() - 3600_000
    seed_session(r, "sess_live", "user_1", last_active_at=last_active, token_type="jwt")
    r.hset("sess:sess_gone", mapping={"status": "revoked", "token_type": "jwt"})
    r.expire("sess:sess_gone", 600)
    seed_user(r, "user_1", role="admin")
    n = start(nginx, rds, directives="session_touch 1s;")
    for sid in ("sess_live", "sess_gone"):
        resp = n.get("/app/", headers=bearer(sid))
        assert resp.status == 401, resp
        assert n.last_session_status() == "invalid"
    assert upstream.requests == []
    assert r.hget("sess:sess_live", "last_active_at") == str(last_active)
    # one HMGET each: a session refused by itself never reads its user hash
    assert rds.calls("hmget") == 2


def test_cached_record_keeps_its_token_type(nginx, rds, r, upstream):
    seed_session(r, "sess_cached", "user_1", token_type="jwt")
    seed_session(r, "sess_app", "user_1", token_type="opaque")
    seed_user(r, "user_1", role="admin")
    n = start(nginx, rds, directives="session_cache tt;",
              http="\n    session_cache_zone tt:1m ttl=30s negative_ttl=30s;")
    for _ in range(3):
        assert n.get("/app/", headers=bearer("sess_cached")).status == 401
        assert n.last_session_status() == "invalid"
        assert n.get("/app/", headers=bearer("sess_app")).status == 200
        assert n.last_session_status() == "ok"
    # One lookup each (sess_app's: its hash, then its user's, a hash without
    # the user's copies): the later verdicts came from the cached records.
    assert rds.calls("hmget") == 3
    assert len(upstream.requests) == 3
