"""Contract version 2 on the writer side (issue 8): every live session hash
carries a copy of its user's fields (user_status, role, roles, db_id, email)
and <prefix>user_sessions:<user id> lists the user's live sessions, so that
a user change reaches each of them. Real PostgreSQL, redis-server and syncd."""

import pytest

from syncd_harness import (Redis, Syncd, membership_data, new_id, now_ms, session_data,
                           user_data, wait_for)

COPIED = ("user_status", "role", "roles", "db_id", "email")


def drained(pg):
    wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", what="outbox drained")


def db_id(pg, uid):
    return pg.scalar("SELECT id FROM users WHERE clerk_id = :'p1'", uid)


def copy_of(rds, key):
    """The copied fields of a session hash."""
    h = rds.hgetall(key)
    return {k: v for k, v in h.items() if k in COPIED}


def expected_copy(pg, uid, role="user", roles=None, email="ada@example.com"):
    out = {"user_status": "active", "role": role, "roles": roles or role,
           "db_id": db_id(pg, uid)}
    if email is not None:
        out["email"] = email
    return out


def user_copy(rds, uid):
    """The user hash's fields as a session hash carries them."""
    h = rds.hgetall(f"user:{uid}")
    out = {k: v for k, v in h.items() if k in COPIED}
    out["user_status"] = h.get("status", "active")
    return out


def eventually_copies(rds, sids, expected):
    def check():
        return all(copy_of(rds, f"sess:{s}") == expected for s in sids)
    wait_for(check, what=f"{sids} to carry {expected}")
    for sid in sids:
        assert rds.hget(f"sess:{sid}", "user_id") is not None, sid


def is_tombstone(rds, key, status):
    h = rds.hgetall(key)
    return h == {"status": status, "token_type": "jwt"} and rds.ttl(key) > 0


def live_user(syncd, pg, rds, n_sessions=2, **user_kw):
    uid, t = new_id("user"), now_ms()
    assert syncd.deliver("user.created", user_data(uid, t, **user_kw))[0] == 200
    sids = []
    for _ in range(n_sessions):
        sid = new_id("sess")
        assert syncd.deliver("session.created", session_data(sid, uid, updated_at=t))[0] == 200
        sids.append(sid)
    drained(pg)
    return uid, t, sids


def test_session_created_after_its_user_carries_its_fields(syncd, pg, rds):
    uid, t, sids = live_user(syncd, pg, rds, role="admin", email="ada@example.org")
    eventually_copies(rds, sids, expected_copy(pg, uid, role="admin", email="ada@example.org"))
    # The same values as the user hash, which stays for JWT mode and apps.
    assert copy_of(rds, f"sess:{sids[0]}") == user_copy(rds, uid)
    assert rds.smembers(f"user_sessions:{uid}") == set(sids)
    # The set lives at least as long as the longest session.
    assert rds.pttl(f"user_sessions:{uid}") >= max(rds.pttl(f"sess:{s}") for s in sids) - 1000


def test_session_before_its_user_gets_the_copy_when_the_user_arrives(syncd, pg, rds):
    uid, sid, t = new_id("user"), new_id("sess"), now_ms()
    # Unordered delivery: the session first, no user row yet.
    assert syncd.deliver("session.created", session_data(sid, uid, updated_at=t))[0] == 200
    drained(pg)
    assert copy_of(rds, f"sess:{sid}") == {"user_status": "active"}
    assert not rds.exists(f"user_sessions:{uid}")
    assert syncd.deliver("user.created", user_data(uid, t, role="admin"))[0] == 200
    eventually_copies(rds, [sid], expected_copy(pg, uid, role="admin"))
    assert rds.smembers(f"user_sessions:{uid}") == {sid}


def test_role_and_email_changes_rewrite_every_session(syncd, pg, rds):
    uid, t, sids = live_user(syncd, pg, rds, n_sessions=3)
    eventually_copies(rds, sids, expected_copy(pg, uid))
    # The module moved last_active_at forward (sliding expiry): kept.
    touched = str(now_ms() + 60_000)
    rds.hset(f"sess:{sids[0]}", "last_active_at", touched)
    assert syncd.deliver("user.updated", user_data(uid, t + 10, role="editor"))[0] == 200
    eventually_copies(rds, sids, expected_copy(pg, uid, role="editor"))
    assert syncd.deliver("user.updated",
                         user_data(uid, t + 20, role="editor", email="ada@new.example"))[0] == 200
    eventually_copies(rds, sids, expected_copy(pg, uid, role="editor", email="ada@new.example"))
    assert copy_of(rds, f"sess:{sids[1]}") == user_copy(rds, uid)
    assert rds.hget(f"sess:{sids[0]}", "last_active_at") == touched
    for sid in sids:
        assert rds.hget(f"sess:{sid}", "token_type") == "jwt"
        assert rds.pttl(f"sess:{sid}") > 0
    assert rds.smembers(f"user_sessions:{uid}") == set(sids)


def test_a_change_does_not_bring_back_a_hash_that_is_gone(syncd, pg, rds):
    """The copy is rewritten in place: a hash the module's idle timeout let
    expire stays gone; a tombstone stays a tombstone."""
    uid, t, sids = live_user(syncd, pg, rds)
    ended = new_id("sess")
    assert syncd.deliver("session.created", session_data(ended, uid, updated_at=t))[0] == 200
    assert syncd.deliver("session.ended",
                         session_data(ended, uid, "ended", updated_at=t + 1))[0] == 200
    drained(pg)
    assert is_tombstone(rds, f"sess:{ended}", "ended")
    rds.delete(f"sess:{sids[0]}")
    assert syncd.deliver("user.updated", user_data(uid, t + 10, role="editor"))[0] == 200
    eventually_copies(rds, sids[1:], expected_copy(pg, uid, role="editor"))
    assert not rds.exists(f"sess:{sids[0]}")
    assert is_tombstone(rds, f"sess:{ended}", "ended")
    assert ended not in rds.smembers(f"user_sessions:{uid}")


def test_ban_unban_and_deletion_reach_every_session(syncd, pg, rds):
    uid, t, sids = live_user(syncd, pg, rds)
    ban_at = t + 10
    assert syncd.deliver("user.updated", user_data(uid, ban_at, banned=True))[0] == 200
    wait_for(lambda: all(is_tombstone(rds, f"sess:{s}", "revoked") for s in sids),
             what="tombstones after the ban")
    wait_for(lambda: not rds.exists(f"user_sessions:{uid}"), what="the set gone after the ban")
    # A session created after the ban: valid again once the user is unbanned.
    after = new_id("sess")
    created = session_data(after, uid, updated_at=ban_at + 20)
    created["created_at"] = ban_at + 20
    assert syncd.deliver("session.created", created)[0] == 200
    drained(pg)
    assert is_tombstone(rds, f"sess:{after}", "revoked")
    assert not rds.exists(f"user_sessions:{uid}")
    assert syncd.deliver("user.updated", user_data(uid, ban_at + 30))[0] == 200
    eventually_copies(rds, [after], expected_copy(pg, uid))
    wait_for(lambda: rds.smembers(f"user_sessions:{uid}") == {after}, what="the set after unban")
    for sid in sids:  # revoked by the ban for good: no copy
        assert is_tombstone(rds, f"sess:{sid}", "revoked")
    # Deleted: every session a tombstone without copies, the set gone.
    assert syncd.deliver("user.deleted", {"object": "user", "id": uid, "deleted": True})[0] == 200
    wait_for(lambda: is_tombstone(rds, f"sess:{after}", "ended"), what="tombstone after delete")
    drained(pg)
    assert not rds.exists(f"user_sessions:{uid}")
    assert rds.hgetall(f"user:{uid}") == {"status": "deleted"}


def test_membership_changes_reach_the_sessions_roles(syncd, pg, rds):
    uid, t, sids = live_user(syncd, pg, rds)
    org = new_id("org")
    mem = membership_data(new_id("orgmem"), uid, "acme", "org:admin", t)
    mem["organization"]["id"] = org
    assert syncd.deliver("organizationMembership.created", mem)[0] == 200
    eventually_copies(rds, sids, expected_copy(pg, uid, roles=f"user {org}/org:admin"))
    mem["role"], mem["updated_at"] = "org:member", t + 10
    assert syncd.deliver("organizationMembership.updated", mem)[0] == 200
    eventually_copies(rds, sids, expected_copy(pg, uid, roles=f"user {org}/org:member"))
    mem["updated_at"] = t + 20
    assert syncd.deliver("organizationMembership.deleted", mem)[0] == 200
    eventually_copies(rds, sids, expected_copy(pg, uid, roles="user"))
    assert copy_of(rds, f"sess:{sids[0]}") == user_copy(rds, uid)


def test_ended_session_leaves_the_set_and_its_tombstone_has_no_copy(syncd, pg, rds):
    uid, t, sids = live_user(syncd, pg, rds)
    assert rds.smembers(f"user_sessions:{uid}") == set(sids)
    assert syncd.deliver("session.revoked",
                         session_data(sids[0], uid, "revoked", updated_at=t + 5))[0] == 200
    wait_for(lambda: is_tombstone(rds, f"sess:{sids[0]}", "revoked"), what="tombstone")
    wait_for(lambda: rds.smembers(f"user_sessions:{uid}") == {sids[1]}, what="the set")
    assert syncd.deliver("session.ended",
                         session_data(sids[1], uid, "ended", updated_at=t + 5))[0] == 200
    wait_for(lambda: is_tombstone(rds, f"sess:{sids[1]}", "ended"), what="tombstone")
    # The last one gone: so is the set.
    wait_for(lambda: not rds.exists(f"user_sessions:{uid}"), what="the empty set gone")


@pytest.fixture
def own_redis():
    server = Redis()
    yield server
    server.close()


def snapshot(rds):
    out = {}
    for key in rds.scan_iter(match="*", count=1000):
        if key == "syncd:marker":
            continue
        value = rds.smembers(key) if rds.type(key) == "set" else rds.hgetall(key)
        out[key] = (value, rds.pttl(key) > 0)
    return out


def test_reconcile_after_flushall_rebuilds_copies_and_sets(pg, own_redis):
    rds = own_redis.client
    daemon = Syncd(pg, own_redis).start()
    try:
        t = now_ms()
        uid, other, gone = new_id("user"), new_id("user"), new_id("user")
        org = new_id("org")
        assert daemon.deliver("user.created", user_data(uid, t, role="admin"))[0] == 200
        assert daemon.deliver("user.created", user_data(other, t, email="b@example.com"))[0] == 200
        mem = membership_data(new_id("orgmem"), uid, "acme", "org:admin", t)
        mem["organization"]["id"] = org
        assert daemon.deliver("organizationMembership.created", mem)[0] == 200
        sids = [new_id("sess") for _ in range(3)]
        for sid in sids[:2]:
            assert daemon.deliver("session.created", session_data(sid, uid))[0] == 200
        assert daemon.deliver("session.created", session_data(sids[2], other))[0] == 200
        ended = new_id("sess")
        assert daemon.deliver("session.created", session_data(ended, uid, updated_at=t))[0] == 200
        assert daemon.deliver("session.ended",
                              session_data(ended, uid, "ended", updated_at=t + 1))[0] == 200
        assert daemon.deliver("user.created", user_data(gone, t))[0] == 200
        s_gone = new_id("sess")
        assert daemon.deliver("session.created", session_data(s_gone, gone))[0] == 200
        assert daemon.deliver("user.deleted", {"object": "user", "id": gone,
                                               "deleted": True})[0] == 200
        drained(pg)
        wait_for(lambda: (rds.get("syncd:marker") or "").startswith("reconciled"),
                 what="the first pass")
    finally:
        assert daemon.stop() == 0
    expected = snapshot(rds)
    assert expected[f"user_sessions:{uid}"] == (set(sids[:2]), True)
    assert expected[f"user_sessions:{other}"] == ({sids[2]}, True)
    assert f"user_sessions:{gone}" not in expected
    assert expected[f"sess:{ended}"][0] == {"status": "ended", "token_type": "jwt"}
    assert copy_of(rds, f"sess:{sids[0]}")["roles"] == f"admin {org}/org:admin"
    # The cluster is shared with this module's other tests: every set counts.
    sets = sum(1 for k in expected if k.startswith("user_sessions:"))
    rds.flushall()
    out = daemon.run("reconcile").stdout
    assert f"session sets written {sets}" in out, out
    assert snapshot(rds) == expected
    # Nothing left to do on a second pass.
    again = daemon.run("reconcile").stdout
    assert "session sets written 0" in again and ", written 0;" in again, again
    # A stale member and a missing one: both repaired.
    rds.srem(f"user_sessions:{uid}", sids[0])
    rds.sadd(f"user_sessions:{other}", ended)
    out = daemon.run("reconcile").stdout
    assert "session sets written 2" in out, out
    assert snapshot(rds) == expected
