"""PostgreSQL or Redis down: nothing acknowledged is lost, nothing is
acknowledged before it is committed, and Redis converges when it returns."""

import json

from syncd_harness import new_id, now_ms, session_data, user_data, wait_for


def test_postgres_down_answers_503_then_recovers(syncd, pg, rds):
    events = [("user.created", user_data(new_id("user"), now_ms()), new_id("msg"))
              for _ in range(5)]
    pg.stop()
    try:
        for event_type, data, msg in events:
            status, body, _ = syncd.deliver(event_type, data, msg_id=msg)
            assert status == 503, body
        status, body = syncd.request("GET", "/healthz")
        assert status == 503 and "postgresql" in json.loads(body)["reason"]
    finally:
        pg.start()
    # The sender retries each delivery (same id, fresh signature): all land.
    for event_type, data, msg in events:
        status, body, _ = syncd.deliver(event_type, data, msg_id=msg)
        assert status == 200 and json.loads(body)["outcome"] == "applied", body
    for _, data, msg in events:
        assert pg.scalar("SELECT count(*) FROM users WHERE clerk_id = :'p1'", data["id"]) == "1"
        wait_for(lambda: rds.hget(f"user:{data['id']}", "status") == "active",
                 what="projection after PostgreSQL returned")
    assert syncd.request("GET", "/healthz")[0] == 200


def test_redis_down_acknowledges_and_converges(syncd, pg, redis_server):
    uid, sid = new_id("user"), new_id("sess")
    redis_server.stop()
    try:
        assert syncd.deliver("user.created", user_data(uid, now_ms(), role="admin"))[0] == 200
        assert syncd.deliver("session.created", session_data(sid, uid))[0] == 200
        assert int(pg.scalar("SELECT count(*) FROM outbox")) >= 2
        # Webhooks are still accepted: /healthz says 200, degraded, once the
        # projector has found Redis gone.
        def degraded():
            status, body = syncd.request("GET", "/healthz")
            return status == 200 and json.loads(body)["status"] == "degraded" and body
        assert "redis" in json.loads(wait_for(degraded, what="healthz degraded"))["reason"]
        status, text = syncd.request("GET", "/metrics")
        assert "syncd_redis_up 0" in wait_for(
            lambda: (lambda t: t if "syncd_redis_up 0" in t else None)(
                syncd.request("GET", "/metrics")[1]), what="redis_up to drop")
    finally:
        redis_server.start()
    rds = redis_server.client
    wait_for(lambda: rds.hget(f"user:{uid}", "role") == "admin", timeout=15,
             what="user key after Redis returned")
    wait_for(lambda: rds.hget(f"sess:{sid}", "user_id") == uid, timeout=15,
             what="session key after Redis returned")
    wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", what="outbox to drain")
    assert syncd.request("GET", "/healthz")[0] == 200
