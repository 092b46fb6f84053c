"""Redis comes back empty (issue 7, item 14): syncd notices that its marker
key is gone, after a FLUSHALL (the connection stays up: the periodic check)
or a restart without persistence (the reconnect), reconciles by itself in
the background and counts it in syncd_redis_resyncs_total."""

from syncd_harness import Syncd, new_id, now_ms, session_data, user_data, wait_for


def resyncs(daemon):
    status, text = daemon.request("GET", "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith("syncd_redis_resyncs_total "):
            return int(line.split()[1])
    raise AssertionError("syncd_redis_resyncs_total not exported")


def seed(daemon, rds, prefix):
    """A live user with a session, and a banned one: the keys and their
    fields as the projector wrote them."""
    t = now_ms()
    live, banned = new_id("user"), new_id("user")
    s_live, s_banned = new_id("sess"), new_id("sess")
    assert daemon.deliver("user.created", user_data(live, t, role="admin"))[0] == 200
    assert daemon.deliver("user.created", user_data(banned, t, banned=True))[0] == 200
    assert daemon.deliver("session.created", session_data(s_live, live))[0] == 200
    assert daemon.deliver("session.created", session_data(s_banned, banned))[0] == 200
    keys = [f"{prefix}user:{live}", f"{prefix}user:{banned}", f"{prefix}sess:{s_live}",
            f"{prefix}sess:{s_banned}"]
    wait_for(lambda: all(rds.exists(k) for k in keys), what="projection")
    expected = {k: rds.hgetall(k) for k in keys}
    assert expected[f"{prefix}sess:{s_banned}"] == {"status": "revoked", "token_type": "jwt"}
    assert expected[f"{prefix}user:{live}"]["role"] == "admin"
    return expected


def projection_back(rds, expected):
    return all(rds.hgetall(k) == fields for k, fields in expected.items())


def start(pg, redis_server, prefix):
    daemon = Syncd(pg, redis_server, prefix=prefix).start()
    rds = redis_server.client
    # The first start against a Redis without the marker is a resync too.
    wait_for(lambda: rds.get(prefix + "syncd:marker"), what="marker after the first pass")
    wait_for(lambda: resyncs(daemon) == 1, what="first pass counted")
    return daemon


def test_flushall_is_noticed_and_repaired(pg, redis_server):
    rds = redis_server.client
    prefix = "empty1:"
    daemon = start(pg, redis_server, prefix)
    try:
        expected = seed(daemon, rds, prefix)
        assert rds.get(prefix + "syncd:marker").startswith("reconciled ")
        rds.flushall()
        # Nobody runs reconcile: the periodic marker check (5 s) does.
        wait_for(lambda: projection_back(rds, expected), timeout=30, interval=0.2,
                 what="projection back after FLUSHALL")
        wait_for(lambda: resyncs(daemon) == 2, what="resync counted")
        assert rds.get(prefix + "syncd:marker").startswith("reconciled ")
        log = daemon.read_log()
        assert "Redis holds no syncd marker" in log
        assert "Redis resynchronised from PostgreSQL" in log
        # Changes keep flowing afterwards.
        uid = new_id("user")
        assert daemon.deliver("user.created", user_data(uid, now_ms(), role="ops"))[0] == 200
        wait_for(lambda: rds.hget(f"{prefix}user:{uid}", "role") == "ops", what="new event")
        assert resyncs(daemon) == 2
    finally:
        assert daemon.stop() == 0


def test_restart_without_persistence_is_noticed_and_repaired(pg, redis_server):
    rds = redis_server.client
    prefix = "empty2:"
    daemon = start(pg, redis_server, prefix)
    try:
        expected = seed(daemon, rds, prefix)
        redis_server.stop()
        redis_server.start()  # --save "" --appendonly no: empty
        rds = redis_server.client
        assert rds.dbsize() == 0
        wait_for(lambda: projection_back(rds, expected), timeout=30, interval=0.2,
                 what="projection back after a Redis restart")
        wait_for(lambda: resyncs(daemon) == 2, what="resync counted")
        assert rds.get(prefix + "syncd:marker").startswith("reconciled ")
    finally:
        assert daemon.stop() == 0
