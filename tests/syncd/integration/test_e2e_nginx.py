"""End to end with the nginx module. Clerk's session id is no secret (it is
in every session token's sid claim, in webhooks, visible to the browser), so
the session hash syncd writes carries token_type=jwt and nginx refuses the
bare session id as a bearer token, before and after session.revoked. A ban
projected by syncd refuses the user's other sessions (here an application's
own opaque session) at once (no cache). Clerk's session token end to end (a
signed JWT whose sid names the session) is tested with the module's JWT
suites, tests/integration/test_jwt*.py. Skipped when the module is not built
(`make module`)."""

import pytest

import nginx_process
from syncd_harness import Syncd, new_id, now_ms, session_data, user_data, wait_for

pytestmark = nginx_process.requires_module


@pytest.fixture
def nginx(redis_server):
    with nginx_process.running_nginx(redis_server.port, """
            session_check on;
            session_token cookie=__session bearer;
            session_cache off;
            add_header X-User-Id $session_user_id always;
            add_header X-Session-Status $session_status always;""") as server:
        yield server.port


def get(port, token):
    status, headers = nginx_process.get_app(port, {"Authorization": f"Bearer {token}"},
                                            ("X-User-Id", "X-Session-Status"))
    return status, headers["X-User-Id"], headers["X-Session-Status"]


def test_webhooks_drive_nginx(pg, redis_server, nginx):
    rds = redis_server.client
    daemon = Syncd(pg, redis_server).start()
    try:
        uid, sid, t = new_id("user"), new_id("sess"), now_ms()
        assert get(nginx, sid)[0] == 401
        assert daemon.deliver("user.created", user_data(uid, t))[0] == 200
        assert daemon.deliver("session.created", session_data(sid, uid, updated_at=t))[0] == 200
        wait_for(lambda: rds.hget(f"sess:{sid}", "user_id") == uid, what="session hash")
        assert rds.hget(f"sess:{sid}", "token_type") == "jwt"
        # The live session's id is refused: it names a session, it proves nothing.
        assert get(nginx, sid) == (401, None, "invalid")
        # An application's own session (no token_type) for the same user is
        # the credential it always was: the wiring works.
        app_sid = new_id("app")
        rds.hset(f"sess:{app_sid}", mapping={"user_id": uid, "expires_at": str(t + 3600_000)})
        assert get(nginx, app_sid) == (200, uid, "ok")
        assert daemon.deliver("session.revoked",
                              session_data(sid, uid, "revoked", updated_at=t + 1))[0] == 200
        wait_for(lambda: rds.hget(f"sess:{sid}", "status") == "revoked", what="tombstone")
        assert get(nginx, sid) == (401, None, "invalid")
        # A ban refuses every session of the user at once.
        assert daemon.deliver("user.updated", user_data(uid, t + 5, banned=True))[0] == 200
        wait_for(lambda: get(nginx, app_sid)[0] == 401, what="ban to refuse")
        assert get(nginx, app_sid) == (401, None, "revoked")
    finally:
        assert daemon.stop() == 0
