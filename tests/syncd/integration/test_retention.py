"""Item 15: what syncd no longer needs is pruned in the background
(SYNCD_EVENT_RETENTION), and a signed delivery it cannot decode is kept in
dead_letters rather than lost."""

import json

from syncd_harness import Syncd, new_id, now_ms, wait_for

DAY = 24 * 3600


def seed(pg):
    """Rows three days old (past a 2d retention) and one day old (within
    it), written directly; returns the ids of each kind."""
    old, young = new_id("old"), new_id("young")
    revoked_unexpired = new_id("sess")
    live_member = new_id("mem")
    pg.query(
        "INSERT INTO webhook_events (id, type, received_at, outcome) VALUES "
        "(:'p1', 'user.updated', now() - interval '3 days', 'applied'), "
        "(:'p2', 'user.updated', now() - interval '1 day', 'applied');"
        "INSERT INTO dead_letters (id, received_at, reason, payload) VALUES "
        "(:'p1', now() - interval '3 days', 'r', '\\x00'::bytea), "
        "(:'p2', now() - interval '1 day', 'r', '\\x00'::bytea);"
        # Expired three days ago; expired one day ago; revoked three days
        # ago but not expired yet (its last possible use is ahead).
        "INSERT INTO sessions (id, clerk_user_id, status, expires_at, created_at, updated_at, "
        "source_updated_at) VALUES "
        "(:'p1', 'user_r', 'ended', now() - interval '3 days', now() - interval '4 days', "
        "now() - interval '3 days', 1), "
        "(:'p2', 'user_r', 'active', now() - interval '1 day', now() - interval '4 days', "
        "now() - interval '3 days', 1), "
        "(:'p3', 'user_r', 'revoked', now() + interval '1 day', now() - interval '4 days', "
        "now() - interval '3 days', 1);"
        # Removed three days ago; removed one day ago; live and unchanged
        # for three days.
        "INSERT INTO memberships (id, clerk_user_id, organization_id, role, created_at, "
        "updated_at, deleted_at, source_updated_at) VALUES "
        "(:'p1', 'user_r', 'org_r', 'org:member', now() - interval '4 days', "
        "now() - interval '3 days', now() - interval '3 days', 1), "
        "(:'p2', 'user_r', 'org_r', 'org:member', now() - interval '4 days', "
        "now() - interval '1 day', now() - interval '1 day', 1), "
        "(:'p4', 'user_r', 'org_r', 'org:member', now() - interval '4 days', "
        "now() - interval '3 days', NULL, 1);",
        old, young, revoked_unexpired, live_member)
    return old, young, revoked_unexpired, live_member


def count(pg, table, row_id):
    return int(pg.scalar(f"SELECT count(*) FROM {table} WHERE id = :'p1'", row_id))


def test_old_rows_are_pruned_in_the_background(pg, redis_server):
    daemon = Syncd(pg, redis_server, extra_env={"SYNCD_EVENT_RETENTION": "2d"})
    daemon.run("migrate")
    old, young, revoked_unexpired, live_member = seed(pg)
    daemon.start()
    try:
        tables = ("webhook_events", "dead_letters", "sessions", "memberships")
        wait_for(lambda: all(count(pg, t, old) == 0 for t in tables), timeout=30,
                 what="rows past the retention to be pruned")
        for t in tables:
            assert count(pg, t, young) == 1, t
        assert count(pg, "sessions", revoked_unexpired) == 1
        assert count(pg, "memberships", live_member) == 1
        wait_for(lambda: "retention: pruned" in daemon.read_log(), what="the log line")
    finally:
        code = daemon.stop()
    assert code == 0, daemon.read_log()


def test_retention_shorter_than_the_retries_is_refused(pg, redis_server):
    daemon = Syncd(pg, redis_server, extra_env={"SYNCD_EVENT_RETENTION": "1h"})
    out = daemon.run("check-config", check=False)
    assert out.returncode == 78, out.stdout + out.stderr
    assert "SYNCD_EVENT_RETENTION" in out.stderr


def dead_letter(pg, msg_id):
    rows = pg.query("SELECT encode(payload, 'hex'), reason, deliveries FROM dead_letters "
                    "WHERE id = :'p1'", msg_id)
    return rows[0] if rows else None


def test_undecodable_signed_delivery_is_dead_lettered(syncd, pg):
    # A handled type without updated_at: answered 400 as before (the sender
    # is told), and the body is kept as received.
    body = json.dumps({"type": "user.updated", "object": "event",
                       "data": {"id": new_id("user"), "email": "dl-canary@example.com"}}).encode()
    status, text, msg_id = syncd.deliver("user.updated", None, body=body)
    assert status == 400, text
    payload, reason, deliveries = dead_letter(pg, msg_id)
    assert bytes.fromhex(payload) == body
    assert "updated_at" in reason and deliveries == "1"
    # The sender retries the same delivery: one row, counted.
    assert syncd.deliver("user.updated", None, body=body, msg_id=msg_id)[0] == 400
    assert dead_letter(pg, msg_id)[2] == "2"
    # Not JSON, not even UTF-8: kept byte for byte.
    raw = b"\xff\xfe{not json\x00"
    status, _, raw_id = syncd.deliver("x", None, body=raw)
    assert status == 400
    assert bytes.fromhex(dead_letter(pg, raw_id)[0]) == raw
    # Nothing for a delivery whose signature fails, nor for one stored.
    status, _, forged = syncd.deliver("x", None, body=raw, secret="whsec_QUJDREVGR0g=")
    assert status == 401 and dead_letter(pg, forged) is None
    # The payload stays out of the log.
    assert "dl-canary" not in syncd.read_log()
    assert int(pg.scalar("SELECT count(*) FROM webhook_events WHERE id = :'p1'", msg_id)) == 0
