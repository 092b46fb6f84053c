"""Session and user records (docs/redis-contract.md) -> response, headers
the upstream sees, and $session_status."""

import pytest

from harness import (METRICS_LOCATION, app_location, cookie, now_ms, redis_directive,
                     seed_session, seed_user)


def start(nginx, rds, directives="", **kw):
    return nginx(http=redis_directive(rds.address()),
                 server=app_location("/app/", directives)
                 + app_location("/admin/", "session_require_role admin editor;")
                 + METRICS_LOCATION, **kw)


def test_valid_session_reaches_upstream(nginx, rds, r, upstream):
    seed_session(r, "sess_valid", "user_1")
    seed_user(r, "user_1", role="member", db_id=42, email="one@example.com")
    n = start(nginx, rds)
    resp = n.get("/app/page?q=1", headers=cookie("sess_valid"))
    assert resp.status == 200, resp
    assert resp.json()["path"] == "/app/page?q=1"
    assert resp.upstream_header("X-User-Id") == "user_1"
    assert resp.upstream_header("X-Session-Id") == "sess_valid"
    assert resp.upstream_header("X-Session-Status") == "ok"
    assert len(upstream.requests) == 1
    assert n.last_session_status() == "ok"


def test_no_token_is_401_missing(nginx, rds, upstream):
    n = start(nginx, rds)
    resp = n.get("/app/page")
    assert resp.status == 401, resp
    assert resp.header("WWW-Authenticate", "").startswith("Bearer"), resp.headers
    assert upstream.requests == []
    assert n.last_session_status() == "missing"


def test_unknown_token_is_401_invalid(nginx, rds, upstream):
    n = start(nginx, rds)
    resp = n.get("/app/page", headers=cookie("sess_nobody"))
    assert resp.status == 401, resp
    assert resp.header("WWW-Authenticate", "").startswith("Bearer")
    assert upstream.requests == []
    assert n.last_session_status() == "invalid"


def test_expired_session_is_401(nginx, rds, r, upstream):
    seed_session(r, "sess_old", "user_1", expires_in_ms=-1000)
    seed_user(r, "user_1", role="member")
    n = start(nginx, rds)
    resp = n.get("/app/", headers=cookie("sess_old"))
    assert resp.status == 401, resp
    assert upstream.requests == []
    assert n.last_session_status() == "expired"


@pytest.mark.parametrize("status", ["revoked", "ended", "removed"])
def test_revoked_session_is_401(nginx, rds, r, upstream, status):
    seed_session(r, "sess_rev", "user_1", status=status)
    seed_user(r, "user_1", role="member")
    n = start(nginx, rds)
    resp = n.get("/app/", headers=cookie("sess_rev"))
    assert resp.status == 401, resp
    assert upstream.requests == []
    assert n.last_session_status() == "revoked"


def test_explicit_active_status_is_valid(nginx, rds, r):
    seed_session(r, "sess_act", "user_1", status="active")
    seed_user(r, "user_1", role="member")
    n = start(nginx, rds)
    resp = n.get("/app/", headers=cookie("sess_act"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_1"


def test_idle_expired_session_is_401(nginx, rds, r, upstream):
    seed_session(r, "sess_idle", "user_1", idle_timeout=60, last_active_at=now_ms() - 120_000)
    seed_user(r, "user_1", role="member")
    n = start(nginx, rds)
    resp = n.get("/app/", headers=cookie("sess_idle"))
    assert resp.status == 401, resp
    assert upstream.requests == []
    assert n.last_session_status() == "expired"


def test_idle_timeout_not_passed_is_valid(nginx, rds, r):
    seed_session(r, "sess_busy", "user_1", idle_timeout=600, last_active_at=now_ms() - 10_000)
    seed_user(r, "user_1", role="member")
    n = start(nginx, rds)
    resp = n.get("/app/", headers=cookie("sess_busy"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_1"


@pytest.mark.parametrize("user_status", ["banned", "deleted"])
def test_banned_or_deleted_user_is_401(nginx, rds, r, upstream, user_status):
    seed_session(r, "sess_b", "user_bad")
    seed_user(r, "user_bad", role="admin", status=user_status)
    n = start(nginx, rds)
    for path in ("/app/", "/admin/"):
        resp = n.get(path, headers=cookie("sess_b"))
        assert resp.status == 401, (path, resp)
    assert upstream.requests == []
    assert n.last_session_status() == "revoked"


def test_active_user_status_is_valid(nginx, rds, r):
    seed_session(r, "sess_u", "user_ok")
    seed_user(r, "user_ok", role="admin", status="active")
    n = start(nginx, rds)
    assert n.get("/admin/", headers=cookie("sess_u")).status == 200


def test_required_role_primary_role(nginx, rds, r, upstream):
    seed_session(r, "sess_ed", "user_ed")
    seed_user(r, "user_ed", role="editor")
    n = start(nginx, rds)
    resp = n.get("/admin/x", headers=cookie("sess_ed"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Role") == "editor"


def test_wrong_role_is_403(nginx, rds, r, upstream):
    seed_session(r, "sess_v", "user_v")
    seed_user(r, "user_v", role="viewer", roles="viewer acme/org:member")
    n = start(nginx, rds)
    resp = n.get("/admin/x", headers=cookie("sess_v"))
    assert resp.status == 403, resp
    assert upstream.requests == []
    assert n.last_session_status() == "forbidden"
    # the same session is fine where no role is required
    assert n.get("/app/x", headers=cookie("sess_v")).status == 200


def test_role_via_roles_list(nginx, rds, r):
    seed_session(r, "sess_r", "user_r")
    seed_user(r, "user_r", role="viewer", roles="viewer acme/org:admin editor")
    n = start(nginx, rds)
    resp = n.get("/admin/x", headers=cookie("sess_r"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Roles") == "viewer acme/org:admin editor"
    assert resp.upstream_header("X-User-Role") == "viewer"


def test_role_match_is_whole_word(nginx, rds, r):
    # "administrator" and "editors" hold neither "admin" nor "editor"
    seed_session(r, "sess_w", "user_w")
    seed_user(r, "user_w", role="administrator", roles="administrator editors xadmin")
    n = start(nginx, rds)
    assert n.get("/admin/x", headers=cookie("sess_w")).status == 403


def test_org_role_in_required_roles(nginx, rds, r):
    seed_session(r, "sess_o", "user_o")
    seed_user(r, "user_o", role="member", roles="member acme/org:admin")
    seed_session(r, "sess_p", "user_p")
    seed_user(r, "user_p", role="member", roles="member other/org:admin")
    n = nginx(http=redis_directive(rds.address()),
              server=app_location("/org/", "session_require_role acme/org:admin;"))
    assert n.get("/org/", headers=cookie("sess_o")).status == 200
    assert n.get("/org/", headers=cookie("sess_p")).status == 403


def test_missing_user_record(nginx, rds, r, upstream):
    seed_session(r, "sess_nouser", "user_ghost")
    n = start(nginx, rds)
    resp = n.get("/app/x", headers=cookie("sess_nouser"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_ghost"
    assert resp.upstream_header("X-User-Role") is None
    assert resp.upstream_header("X-User-Roles") is None
    assert resp.upstream_header("X-User-Email") is None
    resp = n.get("/admin/x", headers=cookie("sess_nouser"))
    assert resp.status == 403, resp
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("fields", [
    {"expires_at": "9999999999999"},                          # no user_id
    {"user_id": "user_1", "expires_at": "soon"},              # not a number
    {"user_id": "user_1", "expires_at": "-5"},                # negative
    {"user_id": "user_1"},                                    # no expires_at
], ids=["no-user-id", "expires-not-number", "expires-negative", "no-expires"])
def test_malformed_session_hash_is_invalid(nginx, rds, r, upstream, fields):
    r.hset("sess:sess_bad", mapping=fields)
    seed_user(r, "user_1", role="admin")
    n = start(nginx, rds)
    resp = n.get("/app/", headers=cookie("sess_bad"))
    assert resp.status == 401, resp
    assert upstream.requests == []
    assert n.last_session_status() == "invalid"


def test_session_key_of_wrong_type_is_not_a_session(nginx, rds, r, upstream):
    # a string where a hash should be: Redis answers WRONGTYPE; never a 200
    r.set("sess:sess_str", "user_1")
    n = start(nginx, rds)
    resp = n.get("/app/", headers=cookie("sess_str"))
    # README: an error reply is "Redis cannot answer": 503 when closed
    assert resp.status == 503, resp
    assert upstream.requests == []
    assert n.last_session_status() == "error"
    from harness import metric, parse_metrics
    values = parse_metrics(n.get("/metrics").body)[0]
    assert metric(values, "nginx_session_redis_errors_total") == 1
    # and the module keeps working afterwards
    seed_session(r, "sess_fine", "user_1")
    assert n.get("/app/", headers=cookie("sess_fine")).status == 200


def test_many_sessions_in_a_row(nginx, rds, r):
    for i in range(20):
        seed_session(r, "sess_%d" % i, "user_%d" % i)
        seed_user(r, "user_%d" % i, role="admin" if i % 2 else "viewer")
    n = start(nginx, rds)
    for i in range(20):
        resp = n.get("/admin/", headers=cookie("sess_%d" % i))
        assert resp.status == (200 if i % 2 else 403), (i, resp)
        if i % 2:
            assert resp.upstream_header("X-User-Id") == "user_%d" % i


def test_session_check_off_by_default_and_inherited(nginx, rds, r, upstream):
    seed_session(r, "sess_i", "user_i")
    n = nginx(http=redis_directive(rds.address()), server="""
        location /open/ { proxy_pass http://app; }
        location /checked/ {
            session_check on;
            session_token cookie=sessionId;
            location /checked/inner/ { proxy_pass http://app; }
            location /checked/public/ { session_check off; proxy_pass http://app; }
            proxy_pass http://app;
        }""")
    assert n.get("/open/").status == 200
    assert n.get("/checked/inner/").status == 401
    assert n.get("/checked/public/").status == 200
    assert n.get("/checked/x").status == 401
    assert n.get("/checked/inner/", headers=cookie("sess_i")).status == 200


def test_server_level_session_check(nginx, rds, r):
    seed_session(r, "sess_s", "user_s")
    n = nginx(http=redis_directive(rds.address()), server="""
        session_check on;
        session_token bearer;
        location / { proxy_pass http://app; }
        location /health { session_check off; return 200 "up\\n"; }""")
    assert n.get("/x").status == 401
    assert n.get("/x", headers={"Authorization": "Bearer sess_s"}).status == 200
    assert n.get("/health").status == 200
