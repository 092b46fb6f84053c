"""Every event type over real HTTP into a real PostgreSQL and Redis."""

import json
import socket
import time

from syncd_harness import (SECOND_SECRET, SECRET, membership_data, new_id, now_ms, session_data,
                     sign, user_data, wait_for)


def user_row(pg, clerk_id):
    rows = pg.query("SELECT id, email, name, image_url, role, banned, deleted_at IS NOT NULL, "
                    "source_updated_at FROM users WHERE clerk_id = :'p1'", clerk_id)
    assert len(rows) <= 1
    return rows[0] if rows else None


def eventually_hash(rds, key, expected_subset, timeout=5):
    def check():
        h = rds.hgetall(key)
        return h if all(h.get(k) == v for k, v in expected_subset.items()) else None
    return wait_for(check, timeout, what=f"{key} to hold {expected_subset}")


def eventually_gone(rds, key, timeout=5):
    wait_for(lambda: not rds.exists(key), timeout, what=f"{key} to be deleted")


# syncd's session tombstone (docs/redis-contract.md): the status only, with
# token_type, and a TTL that outlasts every token issued before the end.
TOMBSTONE_TTL = 600


def eventually_tombstone(rds, key, status, timeout=5):
    def check():
        h = rds.hgetall(key)
        return h if h.get("status") == status else None
    h = wait_for(check, timeout, what=f"{key} to become a {status} tombstone")
    assert h == {"status": status, "token_type": "jwt"}, h
    ttl = rds.ttl(key)
    assert 120 <= ttl <= TOMBSTONE_TTL, ttl
    return h


def test_user_created_and_projected(syncd, pg, rds):
    uid, t = new_id("user"), now_ms()
    status, body, _ = syncd.deliver("user.created", user_data(uid, t, role="admin"))
    assert status == 200, body
    assert json.loads(body)["outcome"] == "applied"
    db_id, email, name, image, role, banned, deleted, src = user_row(pg, uid)
    assert (email, name, role, banned, deleted) == ("ada@example.com", "Ada Lovelace", "admin",
                                                   "f", "f")
    assert image == "https://img.clerk.com/ada.png"
    assert int(src) == t
    h = eventually_hash(rds, f"user:{uid}", {"db_id": db_id})
    assert h == {"db_id": db_id, "role": "admin", "roles": "admin",
                 "email": "ada@example.com", "status": "active"}
    assert rds.ttl(f"user:{uid}") == -1


def test_event_row_has_no_personal_data(syncd, pg):
    uid = new_id("user")
    _, _, msg = syncd.deliver("user.created", user_data(uid, now_ms(), email="secret@x.org"))
    row = pg.query("SELECT * FROM webhook_events WHERE id = :'p1'", msg)
    assert row and row[0][1] == "user.created"
    assert "secret@x.org" not in json.dumps(row) and uid not in json.dumps(row)


def test_redelivery_is_a_no_op(syncd, pg, rds):
    uid, t = new_id("user"), now_ms()
    status, _, msg = syncd.deliver("user.created", user_data(uid, t))
    assert status == 200
    first = user_row(pg, uid)
    # Same id, new content: still the first version, answered 200.
    status, body, _ = syncd.deliver("user.updated", user_data(uid, t + 5, email="new@example.com"),
                                    msg_id=msg)
    assert status == 200 and json.loads(body)["outcome"] == "duplicate"
    assert user_row(pg, uid) == first
    assert pg.scalar("SELECT count(*) FROM webhook_events WHERE id = :'p1'", msg) == "1"


def test_rotation_accepts_both_secrets(pg, redis_server):
    from syncd_harness import Syncd
    daemon = Syncd(pg, redis_server, secrets=f"{SECRET} {SECOND_SECRET}").start()
    try:
        for secret in (SECRET, SECOND_SECRET):
            status, body, _ = daemon.deliver("user.created", user_data(new_id("user"), now_ms()),
                                             secret=secret)
            assert status == 200, body
        status, _, _ = daemon.deliver("user.created", user_data(new_id("user"), now_ms()),
                                      secret="whsec_" + "QUJD" * 8)
        assert status == 401
    finally:
        assert daemon.stop() == 0


def test_tampering_is_refused(syncd, pg):
    uid = new_id("user")
    body = json.dumps({"type": "user.created", "data": user_data(uid, now_ms())}).encode()
    msg, ts = new_id("msg"), str(int(time.time()))
    good = {"svix-id": msg, "svix-timestamp": ts, "svix-signature": sign(SECRET, msg, ts, body)}
    cases = {
        "body": (body.replace(b"Ada", b"Eve"), good),
        "id header": (body, dict(good, **{"svix-id": new_id("msg")})),
        "timestamp header": (body, dict(good, **{"svix-timestamp": str(int(ts) + 1)})),
        "signature header": (body, dict(good, **{"svix-signature": "v1,dawfeoifkpqwoekfpqoekf"})),
        "missing signature": (body, {k: v for k, v in good.items() if k != "svix-signature"}),
        "non-numeric timestamp": (body, dict(good, **{"svix-timestamp": "hello"})),
    }
    for name, (b, h) in cases.items():
        status, _ = syncd.request("POST", "/webhooks/clerk", b, h)
        assert status == 401, name
    for skew in (-301, 301):
        status, _, _ = syncd.deliver("user.created", user_data(uid, now_ms()),
                                     timestamp=int(time.time()) + skew)
        assert status == 401, skew
    assert user_row(pg, uid) is None
    status, _ = syncd.request("POST", "/webhooks/clerk", body, good)
    assert status == 200


def test_unbranded_headers(syncd, pg):
    uid = new_id("user")
    status, _, _ = syncd.deliver(
        "user.created", user_data(uid, now_ms()),
        headers=lambda h: {k.replace("svix-", "webhook-"): v for k, v in h.items()})
    assert status == 200
    assert user_row(pg, uid) is not None


def test_malformed_and_oversized(syncd):
    status, _, _ = syncd.deliver("x", None, body=b"{not json")
    assert status == 400
    status, _, _ = syncd.deliver("x", None, body=b'{"data": {}}')
    assert status == 400
    status, _, _ = syncd.deliver("x", None, body=b'{"type": "user.created"}')
    assert status == 400
    status, _, _ = syncd.deliver("x", None, body=b" " * (1024 * 1024 + 1))
    assert status == 413
    # Chunked, with no length announced: counted as it arrives.
    chunks = iter([b" " * 65536] * 17)
    status, _ = syncd.request("POST", "/webhooks/clerk", chunks,
                              {"Transfer-Encoding": "chunked"}, chunked=True)
    assert status == 413
    # Far over the limit: refused from the headers alone.
    with socket.create_connection(("127.0.0.1", syncd.port), timeout=10) as s:
        s.sendall(b"POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 100000000\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413")
    status, _ = syncd.request("GET", "/webhooks/clerk")
    assert status == 405
    status, _ = syncd.request("GET", "/nowhere")
    assert status == 404


def test_unknown_type_is_stored_and_acknowledged(syncd, pg):
    status, body, msg = syncd.deliver("email.created", {"object": "email", "id": "ema_1"})
    assert status == 200 and json.loads(body)["outcome"] == "ignored"
    assert pg.query("SELECT type, outcome FROM webhook_events WHERE id = :'p1'", msg) == [
        ["email.created", "ignored"]]


def test_out_of_order_updates(syncd, pg, rds):
    uid, t = new_id("user"), now_ms()
    assert syncd.deliver("user.created", user_data(uid, t, role="user"))[0] == 200
    assert syncd.deliver("user.updated", user_data(uid, t + 2000, role="editor",
                                                   email="new@example.com"))[0] == 200
    status, body, _ = syncd.deliver("user.updated", user_data(uid, t + 1000, role="admin",
                                                              email="old@example.com"))
    assert status == 200 and json.loads(body)["outcome"] == "stale"
    row = user_row(pg, uid)
    assert (row[1], row[4], int(row[7])) == ("new@example.com", "editor", t + 2000)
    eventually_hash(rds, f"user:{uid}", {"role": "editor", "email": "new@example.com"})


def test_delete_then_late_update(syncd, pg, rds):
    uid, sid, t = new_id("user"), new_id("sess"), now_ms()
    assert syncd.deliver("user.created", user_data(uid, t))[0] == 200
    assert syncd.deliver("session.created", session_data(sid, uid))[0] == 200
    assert syncd.deliver("organizationMembership.created",
                         membership_data(new_id("orgmem"), uid))[0] == 200
    eventually_hash(rds, f"sess:{sid}", {"user_id": uid})
    status, _, _ = syncd.deliver("user.deleted", {"object": "user", "id": uid, "deleted": True})
    assert status == 200
    _, email, name, image, _, _, deleted, _ = user_row(pg, uid)
    assert (email, name, image, deleted) == (None, None, None, "t")
    assert pg.scalar("SELECT status FROM sessions WHERE id = :'p1'", sid) == "ended"
    assert pg.scalar("SELECT count(*) FROM memberships WHERE clerk_user_id = :'p1' "
                     "AND deleted_at IS NULL", uid) == "0"
    eventually_tombstone(rds, f"sess:{sid}", "ended")
    assert eventually_hash(rds, f"user:{uid}", {"status": "deleted"}) == {"status": "deleted"}
    assert rds.ttl(f"user:{uid}") > 30 * 24 * 3600 - 60
    # A late update (newer timestamp even) does not resurrect the user.
    status, body, _ = syncd.deliver("user.updated", user_data(uid, t + 99999))
    assert status == 200 and json.loads(body)["outcome"] == "stale"
    assert pg.scalar("SELECT count(*) FROM users WHERE clerk_id = :'p1'", uid) == "1"
    assert user_row(pg, uid)[1] is None
    # Nor does a late session.
    late = new_id("sess")
    assert syncd.deliver("session.created", session_data(late, uid))[0] == 200
    assert pg.scalar("SELECT status FROM sessions WHERE id = :'p1'", late) == "ended"
    eventually_tombstone(rds, f"sess:{late}", "ended")


def test_delete_before_create(syncd, pg):
    uid = new_id("user")
    assert syncd.deliver("user.deleted", {"object": "user", "id": uid, "deleted": True})[0] == 200
    status, body, _ = syncd.deliver("user.created", user_data(uid, now_ms()))
    assert status == 200 and json.loads(body)["outcome"] == "stale"
    assert user_row(pg, uid)[6] == "t"


def test_session_lifecycle_and_revocations(syncd, pg, rds):
    uid, t = new_id("user"), now_ms()
    assert syncd.deliver("user.created", user_data(uid, t))[0] == 200
    pubsub = rds.pubsub()
    pubsub.subscribe("session:revocations")
    wait_for(lambda: pubsub.get_message(timeout=0.1), what="subscription")
    for end_type, status_name in (("session.ended", "ended"), ("session.removed", "removed"),
                                  ("session.revoked", "revoked")):
        sid = new_id("sess")
        created = session_data(sid, uid, updated_at=t)
        assert syncd.deliver("session.created", created)[0] == 200
        h = eventually_hash(rds, f"sess:{sid}", {"user_id": uid})
        # Contract version 2: the user's fields copied in (user_status first
        # of all, which tells the reader that the copy is there).
        db_id = user_row(pg, uid)[0]
        assert h == {"user_id": uid, "expires_at": str(created["expire_at"]),
                     "last_active_at": str(t), "token_type": "jwt",
                     "user_status": "active", "role": "user", "roles": "user",
                     "db_id": db_id, "email": "ada@example.com"}
        assert 0 < rds.pttl(f"sess:{sid}") <= 3600_000
        assert rds.smembers(f"user_sessions:{uid}") >= {sid}
        ended = session_data(sid, uid, status=status_name, updated_at=t + 10)
        assert syncd.deliver(end_type, ended)[0] == 200
        # Not deleted: JWT mode lets a verified token through when the hash
        # is missing. The status stays, nothing else (no user_id).
        eventually_tombstone(rds, f"sess:{sid}", status_name)
        # Out of the user's set (written just after the tombstone).
        wait_for(lambda: sid not in rds.smembers(f"user_sessions:{uid}"),
                 what="the ended session out of the set")
        assert pg.scalar("SELECT status FROM sessions WHERE id = :'p1'", sid) == status_name
        msg = wait_for(lambda: pubsub.get_message(timeout=0.2), what="revocation message")
        assert msg["data"] == f"session {sid}"
        # An older "active" arriving late does not bring it back.
        assert syncd.deliver("session.created", session_data(sid, uid, updated_at=t + 5))[0] == 200
        time.sleep(0.2)
        assert rds.hgetall(f"sess:{sid}") == {"status": status_name, "token_type": "jwt"}
    # A status that may still become active is marked until the session expires.
    pending = new_id("sess")
    data = session_data(pending, uid, status="pending")
    assert syncd.deliver("session.pending", data)[0] == 200
    assert pg.scalar("SELECT status FROM sessions WHERE id = :'p1'", pending) == "pending"
    eventually_hash(rds, f"sess:{pending}", {"status": "pending"})
    assert rds.hgetall(f"sess:{pending}") == {"status": "pending", "token_type": "jwt"}
    assert 3500_000 < rds.pttl(f"sess:{pending}") <= 3600_000
    pubsub.close()


def test_session_ended_long_ago_leaves_no_key(syncd, pg, rds):
    # Ended eleven minutes ago (a late delivery): no token for it verifies any
    # more, so there is nothing to keep.
    uid, sid, t = new_id("user"), new_id("sess"), now_ms() - 20 * 60_000
    assert syncd.deliver("user.created", user_data(uid, t))[0] == 200
    assert syncd.deliver("session.created", session_data(sid, uid, updated_at=t))[0] == 200
    eventually_hash(rds, f"sess:{sid}", {"user_id": uid})
    ended = session_data(sid, uid, status="ended", updated_at=now_ms() - 11 * 60_000)
    assert syncd.deliver("session.ended", ended)[0] == 200
    eventually_gone(rds, f"sess:{sid}")


def test_ban_tombstones_sessions_and_role_change_publishes(syncd, pg, rds):
    uid, t = new_id("user"), now_ms()
    assert syncd.deliver("user.created", user_data(uid, t, role="user"))[0] == 200
    sids = [new_id("sess") for _ in range(2)]
    for sid in sids:
        assert syncd.deliver("session.created", session_data(sid, uid))[0] == 200
        eventually_hash(rds, f"sess:{sid}", {"user_id": uid})
    pubsub = rds.pubsub()
    pubsub.subscribe("session:revocations")
    wait_for(lambda: pubsub.get_message(timeout=0.1), what="subscription")
    assert syncd.deliver("user.updated", user_data(uid, t + 1, role="admin"))[0] == 200
    eventually_hash(rds, f"user:{uid}", {"role": "admin"})
    assert wait_for(lambda: pubsub.get_message(timeout=0.2))["data"] == f"user {uid}"
    assert syncd.deliver("user.updated", user_data(uid, t + 2, role="admin", banned=True))[0] == 200
    eventually_hash(rds, f"user:{uid}", {"status": "banned"})
    for sid in sids:
        eventually_tombstone(rds, f"sess:{sid}", "revoked")
    got = set()
    wait_for(lambda: got.add(pubsub.get_message(timeout=0.2)["data"]) or len(got) >= 3,
             what="ban messages")
    assert got == {f"user {uid}"} | {f"session {s}" for s in sids}
    pubsub.close()
    # Unbanned: the ban revoked the sessions (as Clerk does); none comes back
    # (test_orgs_bans.py has the details).
    assert syncd.deliver("user.updated", user_data(uid, t + 3, role="admin"))[0] == 200
    eventually_hash(rds, f"user:{uid}", {"status": "active"})
    for sid in sids:
        eventually_tombstone(rds, f"sess:{sid}", "revoked")


def test_memberships_make_roles(syncd, pg, rds):
    uid, t = new_id("user"), now_ms()
    assert syncd.deliver("user.created", user_data(uid, t, role="editor"))[0] == 200
    m1, m2 = new_id("orgmem"), new_id("orgmem")
    assert syncd.deliver("organizationMembership.created",
                         membership_data(m1, uid, "acme", "org:admin", t))[0] == 200
    assert syncd.deliver("organizationMembership.created",
                         membership_data(m2, uid, "globex", "org:member", t + 1))[0] == 200
    eventually_hash(rds, f"user:{uid}",
                    {"roles": "editor org_acme/org:admin org_globex/org:member"})
    row = pg.query("SELECT organization_id, organization_slug, role, permissions "
                   "FROM memberships WHERE id = :'p1'", m1)
    assert row == [["org_acme", "acme", "org:admin", "{org:posts:read}"]]
    assert syncd.deliver("organizationMembership.updated",
                         membership_data(m2, uid, "globex", "org:admin", t + 5))[0] == 200
    eventually_hash(rds, f"user:{uid}", {"roles": "editor org_acme/org:admin org_globex/org:admin"})
    assert syncd.deliver("organizationMembership.deleted",
                         membership_data(m1, uid, "acme", "org:admin", t + 6))[0] == 200
    eventually_hash(rds, f"user:{uid}", {"roles": "editor org_globex/org:admin"})
    # A late update of the deleted membership changes nothing.
    status, body, _ = syncd.deliver("organizationMembership.updated",
                                    membership_data(m1, uid, "acme", "org:member", t + 9))
    assert json.loads(body)["outcome"] == "stale"
    time.sleep(0.2)
    assert rds.hget(f"user:{uid}", "roles") == "editor org_globex/org:admin"


def test_healthz_and_metrics(syncd):
    status, body = syncd.request("GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    syncd.deliver("user.created", user_data(new_id("user"), now_ms()), secret=SECOND_SECRET)
    status, text = syncd.request("GET", "/metrics")
    assert status == 200
    assert 'syncd_events_total{type="user.created",outcome="applied"}' in text
    assert 'syncd_signature_failures_total{reason="bad_signature"}' in text
    assert "syncd_duplicates_total" in text
    assert "syncd_outbox_depth" in text
    assert "syncd_request_duration_seconds_bucket{le=\"+Inf\"}" in text
    failures = [l for l in text.splitlines()
                if l.startswith('syncd_signature_failures_total{reason="bad_signature"}')]
    assert int(failures[0].split()[-1]) >= 1
