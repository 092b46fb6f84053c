"""session_redis parameters against real servers: prefix=, password=, db=,
unix sockets."""

from harness import app_location, cookie, redis_directive, seed_session, seed_user


def test_prefix(nginx, rds, r, upstream):
    seed_session(r, "sess_p", "user_p", prefix="app1:")
    seed_user(r, "user_p", role="admin", prefix="app1:")
    seed_session(r, "sess_plain", "user_p")       # unprefixed: not ours
    seed_user(r, "user_p", role="viewer")          # unprefixed user: not ours
    n = nginx(http=redis_directive(rds.address(), "prefix=app1: timeout=1s"),
              server=app_location("/app/", "session_require_role admin;"))
    resp = n.get("/app/", headers=cookie("sess_p"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Role") == "admin"
    assert n.get("/app/", headers=cookie("sess_plain")).status == 401


def test_prefix_applies_to_user_key(nginx, rds, r):
    # the session is prefixed, the user only exists unprefixed: no user record
    seed_session(r, "sess_q", "user_q", prefix="p2/")
    seed_user(r, "user_q", role="admin")
    n = nginx(http=redis_directive(rds.address(), "prefix=p2/"),
              server=app_location("/app/") + app_location("/admin/", "session_require_role admin;"))
    resp = n.get("/app/", headers=cookie("sess_q"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Role") is None
    assert n.get("/admin/", headers=cookie("sess_q")).status == 403


def test_password_and_db(nginx, redis_factory):
    srv = redis_factory(password="s3cret-pw")
    db3 = srv.client(db=3)
    seed_session(db3, "sess_db3", "user_db3")
    seed_user(db3, "user_db3", role="admin", db_id=7)
    seed_session(srv.client(db=0), "sess_db0", "user_db0")
    n = nginx(http=redis_directive(srv.address(), "password=s3cret-pw db=3 timeout=1s connect_timeout=1s"),
              server=app_location("/app/"))
    resp = n.get("/app/", headers=cookie("sess_db3"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Db-Id") == "7"
    assert n.get("/app/", headers=cookie("sess_db0")).status == 401
    assert "s3cret-pw" not in n.log()


def test_password_required_but_missing(nginx, redis_factory):
    srv = redis_factory(password="s3cret-pw")
    seed_session(srv.client(), "sess_x", "user_x")
    n = nginx(http=redis_directive(srv.address()), server=app_location("/app/"))
    assert n.get("/app/", headers=cookie("sess_x")).status == 503


def test_unix_socket(nginx, redis_factory):
    srv = redis_factory(unix_socket=True)
    seed_session(srv.client(), "sess_unix", "user_unix")
    seed_user(srv.client(), "user_unix", role="editor")
    n = nginx(http=redis_directive("unix:" + srv.unix_path), server=app_location("/app/"))
    resp = n.get("/app/", headers=cookie("sess_unix"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_unix"
    assert resp.upstream_header("X-User-Role") == "editor"
    assert n.get("/app/", headers=cookie("sess_none")).status == 401


def test_unix_socket_with_password_db_prefix(nginx, redis_factory):
    srv = redis_factory(unix_socket=True, password="pw2")
    c = srv.client(db=1)
    seed_session(c, "sess_all", "user_all", prefix="x:")
    seed_user(c, "user_all", role="admin", prefix="x:")
    n = nginx(http=redis_directive("unix:" + srv.unix_path, "password=pw2 db=1 prefix=x: timeout=1s"),
              server=app_location("/app/", "session_require_role admin;"))
    resp = n.get("/app/", headers=cookie("sess_all"))
    assert resp.status == 200, resp


def test_default_timeouts(nginx, rds, r):
    # no optional parameter at all
    seed_session(r, "sess_d", "user_d")
    n = nginx(http=redis_directive(rds.address(), ""), server=app_location("/app/"))
    assert n.get("/app/", headers=cookie("sess_d")).status == 200


def test_hostname_address(nginx, rds, r):
    # README: a hostname is resolved once at start-up (redis listens on
    # 127.0.0.1 only; "localhost" must still reach it)
    seed_session(r, "sess_h", "user_h")
    n = nginx(http=redis_directive("localhost:%d" % rds.port), server=app_location("/app/"))
    resp = n.get("/app/", headers=cookie("sess_h"))
    assert resp.status == 200, resp
