"""End to end with the nginx module in JWT mode, the cache on: Clerk's
session token (a JWT signed with the test's key, whose sid names the session)
passes once syncd has projected the user from PostgreSQL (the upstream sees
the application's db_id and role), and a signed session.revoked makes nginx
refuse the same, still valid token through the revocation message (the
cache's ttl= is a minute, so only the message can drop the entry). Skipped
when the module is not built (`make module`)."""

import os
import sys
import time

import pytest

import nginx_process
from syncd_harness import Syncd, new_id, now_ms, session_data, user_data, wait_for

sys.path.insert(0, os.path.join(nginx_process.SOURCE_DIR, "tests", "clerk"))

import tokens  # noqa: E402

ISSUER = "https://clerk.e2e.example"
ORIGIN = "https://app.e2e.example"

pytestmark = nginx_process.requires_module


@pytest.fixture
def key():
    return tokens.SigningKey(kid="ins_e2e")


@pytest.fixture
def nginx(redis_server, key, tmp_path):
    keys = tmp_path / "jwks.json"
    keys.write_text(tokens.jwks(key))
    with nginx_process.running_nginx(redis_server.port, f"""
            session_check on;
            session_cache sessions;
            session_jwt_keys {keys};
            session_jwt_issuer {ISSUER};
            session_jwt_authorized_parties {ORIGIN};
            add_header X-User-Id $session_user_id always;
            add_header X-User-Db-Id $session_user_db_id always;
            add_header X-User-Role $session_user_role always;
            add_header X-Session-Id $session_id always;
            add_header X-Session-Status $session_status always;""",
                                     http="session_cache_zone sessions:1m ttl=60s;",
                                     name="syncd-e2e-jwt-") as server:
        yield server.port, server.prefix


def get(port, token):
    return nginx_process.get_app(port, {"Cookie": f"__session={token}"}, (
        "X-User-Id", "X-User-Db-Id", "X-User-Role", "X-Session-Id", "X-Session-Status"))


def test_session_token_through_syncd_and_revocation(pg, redis_server, nginx, key):
    port, tmp = nginx
    rds = redis_server.client
    daemon = Syncd(pg, redis_server).start()
    try:
        uid, sid, t = new_id("user"), new_id("sess"), now_ms()
        token = key.mint(tokens.session_claims(uid, sid, ISSUER, azp=ORIGIN, lifetime=300))
        assert daemon.deliver("user.created", user_data(uid, t, role="editor"))[0] == 200
        assert daemon.deliver("session.created", session_data(sid, uid, updated_at=t))[0] == 200
        wait_for(lambda: rds.hget(f"sess:{sid}", "user_id") == uid, what="session hash")
        wait_for(lambda: rds.hget(f"user:{uid}", "db_id"), what="user hash")
        db_id = pg.scalar("SELECT id::text FROM users WHERE clerk_id = :'p1'", uid)

        status, headers = get(port, token)
        assert status == 200, headers
        assert headers["X-User-Id"] == uid
        assert headers["X-Session-Id"] == sid
        assert headers["X-User-Db-Id"] == db_id  # from PostgreSQL, through syncd
        assert headers["X-User-Role"] == "editor"
        assert headers["X-Session-Status"] == "ok"
        # Cached now: the same token is answered without Redis.
        assert get(port, token)[0] == 200

        sent = time.monotonic()
        assert daemon.deliver("session.revoked",
                              session_data(sid, uid, "revoked", updated_at=t + 1))[0] == 200
        wait_for(lambda: get(port, token)[0] == 401, timeout=10, what="the revocation")
        took_ms = (time.monotonic() - sent) * 1000
        status, headers = get(port, token)
        assert (status, headers["X-Session-Status"]) == (401, "revoked")
        # The refusal came from the message, not from the cache entry aging
        # out (ttl=60s); the figure is for the reader, not an assertion.
        print("session.revoked -> refused at nginx in %.0f ms" % took_ms)
        with open(os.path.join(tmp, "error.log")) as f:
            assert token not in f.read()
    finally:
        assert daemon.stop() == 0
