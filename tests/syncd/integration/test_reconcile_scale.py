"""Reconcile in pages (issue 7, item 13): the same Redis state as the
projector's, rows that can need no key skipped in SQL, and a webhook's
projection not held up by a long reconcile (the projector's lock is taken
per page). Each test seeds its own PostgreSQL cluster with generate_series:
the row counts in reconcile's report are exact."""

import subprocess
import time

import pytest

from syncd_harness import SYNCD_BIN, Postgres, Syncd, new_id, now_ms, user_data, wait_for

# Row mix, seeded directly in PostgreSQL. Times relative to now():
#   users:    live (every 7th banned, every 5th without email, every 3rd with
#             two memberships), deleted a day ago (tombstone), deleted 40
#             days ago with expired sessions (no key any more)
#   sessions: active, ended 1 min ago (tombstone), ended an hour ago but
#             unexpired (a key must not pass: deleted), expired long ago,
#             pending, sessions of banned users (revoked tombstone)
SEED = """
INSERT INTO users (clerk_id, email, role, banned, updated_at, source_updated_at)
SELECT 'user_live_' || lpad(i::text, 6, '0'),
       CASE WHEN i % 5 = 0 THEN NULL ELSE 'u' || i || '@example.com' END,
       CASE WHEN i % 11 = 0 THEN 'admin' ELSE 'user' END,
       i % 7 = 0, now() - interval '2 minutes', 1
FROM generate_series(1, :live) i;
INSERT INTO users (clerk_id, role, deleted_at, updated_at, source_updated_at)
SELECT 'user_gone_' || lpad(i::text, 6, '0'), 'user', now() - interval '1 day',
       now() - interval '1 day', 1
FROM generate_series(1, :gone) i;
INSERT INTO users (clerk_id, role, deleted_at, updated_at, source_updated_at)
SELECT 'user_old_' || lpad(i::text, 6, '0'), 'user', now() - interval '40 days',
       now() - interval '40 days', 1
FROM generate_series(1, :old) i;
INSERT INTO memberships (id, clerk_user_id, organization_id, organization_slug, role,
                         created_at, updated_at, source_updated_at)
SELECT 'mem_' || i || '_' || k, 'user_live_' || lpad(i::text, 6, '0'), 'org_' || (i % 13 + k),
       'slug' || (i % 13 + k), CASE WHEN k = 0 THEN 'org:admin' ELSE 'org:member' END,
       now() - make_interval(secs => k), now(), 1
FROM generate_series(1, :live) i, generate_series(0, 1) k WHERE i % 3 = 0;
-- active, on live users (banned ones included)
INSERT INTO sessions (id, clerk_user_id, status, expires_at, last_active_at, created_at,
                      updated_at, source_updated_at)
SELECT 'sess_act_' || lpad(i::text, 6, '0'), 'user_live_' || lpad((i % :live + 1)::text, 6, '0'),
       'active', now() + interval '1 day' + make_interval(secs => i),
       now() - interval '30 seconds', now() - interval '1 hour', now() - interval '1 hour', 1
FROM generate_series(1, :active) i;
INSERT INTO sessions (id, clerk_user_id, status, expires_at, created_at, updated_at,
                      source_updated_at)
SELECT 'sess_end_' || lpad(i::text, 6, '0'), 'user_live_' || lpad((i % :live + 1)::text, 6, '0'),
       CASE WHEN i % 2 = 0 THEN 'ended' ELSE 'revoked' END, now() + interval '1 day',
       now() - interval '2 hours', now() - interval '1 minute', 1
FROM generate_series(1, :ended) i;
INSERT INTO sessions (id, clerk_user_id, status, expires_at, created_at, updated_at,
                      source_updated_at)
SELECT 'sess_ago_' || lpad(i::text, 6, '0'), 'user_live_' || lpad((i % :live + 1)::text, 6, '0'),
       'ended', now() + interval '1 day', now() - interval '2 hours', now() - interval '1 hour', 1
FROM generate_series(1, :ago) i;
INSERT INTO sessions (id, clerk_user_id, status, expires_at, created_at, updated_at,
                      source_updated_at)
SELECT 'sess_exp_' || lpad(i::text, 6, '0'), 'user_live_' || lpad((i % :live + 1)::text, 6, '0'),
       CASE WHEN i % 2 = 0 THEN 'active' ELSE 'ended' END, now() - interval '3 days',
       now() - interval '10 days', now() - interval '3 days', 1
FROM generate_series(1, :expired) i;
INSERT INTO sessions (id, clerk_user_id, status, expires_at, created_at, updated_at,
                      source_updated_at)
SELECT 'sess_pnd_' || lpad(i::text, 6, '0'), 'user_live_' || lpad((i % :live + 1)::text, 6, '0'),
       'pending', now() + interval '1 hour', now(), now(), 1
FROM generate_series(1, :pending) i;
INSERT INTO sessions (id, clerk_user_id, status, expires_at, created_at, updated_at,
                      source_updated_at)
SELECT 'sess_old_' || lpad(i::text, 6, '0'), 'user_old_' || lpad(i::text, 6, '0'),
       'ended', now() - interval '39 days', now() - interval '41 days', now() - interval '40 days', 1
FROM generate_series(1, :old) i;
"""


def seed(pg, **counts):
    sql = SEED
    for name, value in counts.items():
        sql = sql.replace(":" + name, str(int(value)))
    pg.query(sql)


def snapshot(rds, prefix):
    """Every key under the prefix but syncd's marker: fields, remaining ms."""
    out = {}
    for key in rds.scan_iter(match=prefix + "*", count=1000):
        if key == prefix + "syncd:marker":
            continue
        # user_sessions: sets (contract version 2) beside the hashes.
        value = rds.smembers(key) if rds.type(key) == "set" else rds.hgetall(key)
        out[key] = (value, rds.pttl(key))
    return out


def same_state(reference, actual):
    assert reference.keys() == actual.keys(), (
        sorted(reference.keys() - actual.keys())[:5], sorted(actual.keys() - reference.keys())[:5])
    for key, (fields, pttl) in reference.items():
        got_fields, got_pttl = actual[key]
        assert got_fields == fields, key
        assert (got_pttl >= 0) == (pttl >= 0), key
        if pttl >= 0:
            # PEXPIREAT of expires_at is exact; EXPIRE counts from the write.
            assert abs(got_pttl - pttl) < 120_000, (key, pttl, got_pttl)


@pytest.fixture
def own_pg():
    server = Postgres()
    yield server
    server.close()


def test_paged_reconcile_matches_the_projector(own_pg, redis_server):
    rds = redis_server.client
    prefix = "scale:"
    counts = dict(live=1500, gone=100, old=100, active=2000, ended=300, ago=300, expired=500,
                  pending=100)
    daemon = Syncd(own_pg, redis_server, prefix=prefix)
    daemon.run("migrate")
    seed(own_pg, **counts)
    # The projector is the reference: every row goes through the outbox.
    own_pg.query("INSERT INTO outbox (kind, key) SELECT DISTINCT 'user', clerk_id FROM users;"
                 "INSERT INTO outbox (kind, key) SELECT 'session', id FROM sessions;")
    # A marker in place: the daemon must not reconcile by itself here.
    rds.set(prefix + "syncd:marker", "reconciled 0")
    daemon.start()
    try:
        wait_for(lambda: own_pg.scalar("SELECT count(*) FROM outbox") == "0", timeout=120,
                 what="outbox drained")
    finally:
        assert daemon.stop() == 0
    reference = snapshot(rds, prefix)
    # The projector wrote tombstones for users deleted 40 days ago (their
    # rows were in the outbox); reconcile must leave them to expire.
    old = {k for k in reference if k.startswith(prefix + "user:user_old_")}
    assert len(old) == counts["old"]
    for key in old:
        del reference[key]
    live_sessions = counts["active"]
    assert sum(1 for k, (f, _) in reference.items() if "user_id" in f) < live_sessions
    assert any(f == {"status": "revoked", "token_type": "jwt"} for f, _ in reference.values())
    sets = [k for k in reference if k.startswith(prefix + "user_sessions:")]
    assert sets and all(reference[k][1] > 0 for k in sets)

    for key in rds.scan_iter(match=prefix + "*", count=1000):
        rds.delete(key)
    # Drift that only reconcile repairs: a live hash for a session that ended
    # an hour ago (a Redis restored from an old dump).
    ago = prefix + "sess:sess_ago_000001"
    rds.hset(ago, mapping={"user_id": "user_live_000002", "expires_at": "99999999999999"})
    out = daemon.run("reconcile").stdout
    # Skipped in SQL: users deleted 40 days ago, sessions expired days ago.
    users = counts["live"] + counts["gone"]
    # Expired sessions are skipped, but not those of a user banned in the
    # last 10 minutes: they get a tombstone like the user's other sessions.
    banned_expired = sum(1 for i in range(1, counts["expired"] + 1)
                         if (i % counts["live"] + 1) % 7 == 0)
    sessions = (counts["active"] + counts["ended"] + counts["ago"] + counts["pending"] +
                banned_expired)
    assert f"users checked {users}, written {users};" in out, out
    assert f"sessions checked {sessions}," in out, out
    assert "removed 1" in out, out
    assert f"session sets written {len(sets)}" in out, out
    same_state(reference, snapshot(rds, prefix))
    assert rds.get(prefix + "syncd:marker").startswith("reconciled ")
    # Nothing left to do on a second pass.
    again = daemon.run("reconcile").stdout
    assert f"users checked {users}, written 0; sessions checked {sessions}, written 0, " \
           "tombstones written 0, removed 0; session sets written 0" in again, again


def test_webhook_projected_during_a_long_reconcile(own_pg, redis_server):
    rds = redis_server.client
    prefix = "long:"
    daemon = Syncd(own_pg, redis_server, prefix=prefix)
    daemon.run("migrate")
    # Large enough that the pass lasts seconds: the webhook lands early on.
    seed(own_pg, live=100_000, gone=0, old=0, active=100_000, ended=0, ago=0, expired=0,
         pending=0)
    rds.set(prefix + "syncd:marker", "reconciled 0")
    daemon.start()
    try:
        env = dict(daemon.env)
        reconcile = subprocess.Popen([SYNCD_BIN,
                                      "reconcile"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: rds.exists(prefix + "user:user_live_002000") or reconcile.poll() is not None, timeout=60,
                     what="reconcile to start writing")
            assert reconcile.poll() is None, "reconcile finished before the webhook"
            uid = "user_zz_" + new_id("x")
            sent = time.monotonic()
            assert daemon.deliver("user.created", user_data(uid, now_ms(), role="admin"))[0] == 200
            wait_for(lambda: rds.hget(prefix + "user:" + uid, "role") == "admin", timeout=60,
                     what="the webhook's projection")
            latency = time.monotonic() - sent
            # Projected while the pass still runs: the lock is per page.
            assert reconcile.poll() is None, f"projected only after reconcile ended ({latency:.1f} s)"
            out, err = reconcile.communicate(timeout=600)
            assert reconcile.returncode == 0, err
        finally:
            if reconcile.poll() is None:
                reconcile.kill()
                reconcile.wait()
        assert "users checked 100001," in out or "users checked 100000," in out, out
        # Reconcile read the new row under the lock: it did not undo it.
        assert rds.hget(prefix + "user:" + uid, "role") == "admin"
        assert rds.hget(prefix + "user:user_live_100000", "status") == "active"
    finally:
        assert daemon.stop() == 0
