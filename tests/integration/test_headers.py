"""Session variables reaching the upstream, and client-sent identity headers
never reaching it."""

import harness
from harness import app_location, cookie, redis_directive, seed_session, seed_user

SPOOF = [("X-User-Id", "user_evil"), ("X-User-Role", "admin"), ("X-User-Roles", "admin root"),
         ("X-User-Email", "evil@example.com"), ("X-User-Db-Id", "1"), ("X-Session-Id", "forged"),
         ("X-Session-Status", "ok"), ("x-user-id", "lower_evil"), ("X-USER-ID", "upper_evil")]
SET_HEADERS = ["X-User-Id", "X-User-Role", "X-User-Roles", "X-User-Email", "X-User-Db-Id",
               "X-Session-Id", "X-Session-Status"]


def test_every_variable_reaches_upstream(nginx, rds, r):
    seed_session(r, "sess_full", "user_2xA")
    seed_user(r, "user_2xA", role="editor", roles="editor acme/org:admin beta/org:member",
              db_id=1234, email="ada@example.com")
    n = nginx(http=redis_directive(rds.address()), server=app_location())
    resp = n.get("/app/", headers=cookie("sess_full"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-Session-Id") == "sess_full"
    assert resp.upstream_header("X-User-Id") == "user_2xA"
    assert resp.upstream_header("X-User-Db-Id") == "1234"
    assert resp.upstream_header("X-User-Role") == "editor"
    assert resp.upstream_header("X-User-Roles") == "editor acme/org:admin beta/org:member"
    assert resp.upstream_header("X-User-Email") == "ada@example.com"
    assert resp.upstream_header("X-Session-Status") == "ok"


def test_variables_in_response_headers(nginx, rds, r):
    # the variables work outside proxy_set_header too (add_header runs after
    # the access phase; `return` would run before it, in the rewrite phase)
    seed_session(r, "sess_v", "user_v")
    seed_user(r, "user_v", role="admin", email="v@example.com")
    seed_session(r, "sess_f", "user_f")
    seed_user(r, "user_f", role="viewer", email="f@example.com")
    n = nginx(http=redis_directive(rds.address()), server="""
        location /who {
            session_check on;
            session_token cookie=sessionId;
            add_header X-Status $session_status always;
            add_header X-Who "$session_user_id $session_user_role $session_user_email" always;
            proxy_pass http://app;
        }
        location /adm {
            session_check on;
            session_token cookie=sessionId;
            session_require_role admin;
            add_header X-Status $session_status always;
            add_header X-Who "$session_user_id $session_user_role" always;
            proxy_pass http://app;
        }""")
    resp = n.get("/who", headers=cookie("sess_v"))
    assert resp.status == 200, resp
    assert resp.header("X-Who") == "user_v admin v@example.com"
    assert resp.header("X-Status") == "ok"
    resp = n.get("/who")
    assert resp.status == 401
    assert resp.header("X-Status") == "missing"
    # README: the user variables are set for ok, stale and forbidden only
    resp = n.get("/adm", headers=cookie("sess_f"))
    assert resp.status == 403
    assert resp.header("X-Status") == "forbidden"
    assert resp.header("X-Who") == "user_f viewer"
    resp = n.get("/who", headers=cookie("sess_nope"))
    assert resp.status == 401
    assert resp.header("X-Status") == "invalid"
    assert resp.header("X-Who", "").strip() == ""


def test_client_identity_headers_never_reach_upstream(nginx, rds, r):
    seed_session(r, "sess_me", "user_me")
    seed_user(r, "user_me", role="viewer")
    n = nginx(http=redis_directive(rds.address()), server=app_location())
    resp = n.get("/app/", headers=SPOOF + [("Cookie", "sessionId=sess_me")])
    assert resp.status == 200, resp
    assert resp.upstream_headers("X-User-Id") == ["user_me"]
    assert resp.upstream_headers("X-User-Role") == ["viewer"]
    assert resp.upstream_headers("X-Session-Id") == ["sess_me"]
    assert resp.upstream_headers("X-Session-Status") == ["ok"]
    # fields the user record does not have: no header at all, not the client's
    for h in ("X-User-Roles", "X-User-Email", "X-User-Db-Id"):
        assert resp.upstream_headers(h) == [], h


def test_underscore_variant_is_dropped(nginx, rds, r):
    seed_session(r, "sess_me", "user_me")
    n = nginx(http=redis_directive(rds.address()), server=app_location())
    resp = n.get("/app/", headers=[("X_User_Id", "user_evil"), ("Cookie", "sessionId=sess_me")])
    assert resp.status == 200
    seen = [k for k, _ in resp.json()["headers"]]
    assert "X_User_Id" not in seen and "X-User-Id" in seen
    assert resp.upstream_header("X-User-Id") == "user_me"


def test_fail_open_anonymous_gets_no_identity_headers(nginx, upstream):
    down = harness.free_port()  # nothing listens there
    n = nginx(http=redis_directive("127.0.0.1:%d" % down),
              server=app_location("/app/", "session_fail_mode open;"))
    resp = n.get("/app/", headers=SPOOF + [("Cookie", "sessionId=sess_anything")])
    assert resp.status == 200, resp
    for h in SET_HEADERS:
        if h == "X-Session-Status":
            continue
        assert resp.upstream_headers(h) == [], (h, resp.json()["headers"])
    assert resp.upstream_headers("X-Session-Status") == ["error"]


def test_location_without_check_gets_no_identity(nginx, rds, r):
    # proxy_set_header of session variables where session_check is off: the
    # variables are empty and the client's values are still replaced
    seed_session(r, "sess_me", "user_me")
    n = nginx(http=redis_directive(rds.address()), server="""
        location /public/ {
            %s
            proxy_pass http://app;
        }""" % harness.SESSION_HEADERS)
    resp = n.get("/public/", headers=SPOOF + [("Cookie", "sessionId=sess_me")])
    assert resp.status == 200, resp
    for h in SET_HEADERS:
        if h == "X-Session-Status":
            continue
        assert resp.upstream_headers(h) == [], (h, resp.json()["headers"])


def test_forbidden_and_unauthorized_never_proxy(nginx, rds, r, upstream):
    seed_session(r, "sess_v", "user_v")
    seed_user(r, "user_v", role="viewer")
    n = nginx(http=redis_directive(rds.address()),
              server=app_location("/admin/", "session_require_role admin;"))
    assert n.get("/admin/", headers=SPOOF + [("Cookie", "sessionId=sess_v")]).status == 403
    assert n.get("/admin/", headers=SPOOF).status == 401
    assert upstream.requests == []
