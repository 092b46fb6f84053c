"""Issue 7, items 10-12, against a real PostgreSQL, redis-server and syncd:
organizations named by id and their deletion, a ban that ends sessions,
Clerk's inactivity timeout and abandon_at."""

import hashlib
import json
import os
import time

import pytest

from syncd_harness import (Postgres, Syncd, membership_data, new_id, now_ms, session_data,
                           user_data, wait_for)

IDLE_TIMEOUT = 1800
TOMBSTONE_TTL = 600
SOURCE_DIR = os.environ.get("SYNCD_SOURCE_DIR",
                            os.path.join(os.path.dirname(__file__), "..", "..", ".."))


@pytest.fixture(scope="module")
def syncd(pg, redis_server):
    """This module's daemon runs with Clerk's inactivity timeout set."""
    daemon = Syncd(pg, redis_server,
                   extra_env={"SYNCD_SESSION_IDLE_TIMEOUT": str(IDLE_TIMEOUT)}).start()
    yield daemon
    code = daemon.stop()
    assert code == 0, daemon.read_log()


def drained(pg):
    wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", what="outbox")


def eventually(rds, key, expected):
    def check():
        h = rds.hgetall(key)
        return h if all(h.get(k) == v for k, v in expected.items()) else None
    return wait_for(check, what=f"{key} to hold {expected}")


def tombstone(rds, key, status):
    h = eventually(rds, key, {"status": status})
    assert h == {"status": status, "token_type": "jwt"}, h
    assert 0 < rds.ttl(key) <= TOMBSTONE_TTL


def org_data(org_id, slug, updated_at, name=None):
    return {"object": "organization", "id": org_id, "slug": slug,
            "name": name or slug.title(), "members_count": 2,
            "created_at": updated_at - 1000, "updated_at": updated_at}


def org_row(pg, org_id):
    rows = pg.query("SELECT slug, name, deleted_at IS NOT NULL, source_updated_at "
                    "FROM organizations WHERE id = :'p1'", org_id)
    return rows[0] if rows else None


def member_of(syncd, uid, org_id, slug, role, t):
    data = membership_data(new_id("orgmem"), uid, slug, role, t)
    data["organization"]["id"] = org_id
    status, body, _ = syncd.deliver("organizationMembership.created", data)
    assert status == 200, body
    return data


class Revocations:
    def __init__(self, rds):
        self.pubsub = rds.pubsub()
        self.pubsub.subscribe("session:revocations")
        wait_for(lambda: self.pubsub.get_message(timeout=0.1), what="subscription")
        self.seen = set()

    def wait(self, *expected):
        def all_seen():
            msg = self.pubsub.get_message(timeout=0.2)
            if msg and msg["type"] == "message":
                self.seen.add(msg["data"])
            return set(expected) <= self.seen
        wait_for(all_seen, what=f"revocations {expected}")

    def close(self):
        self.pubsub.close()


# Item 10 ------------------------------------------------------------------

def test_roles_name_the_organization_by_id_not_slug(syncd, pg, rds):
    uid, t = new_id("user"), now_ms()
    org = new_id("org")
    assert syncd.deliver("user.created", user_data(uid, t))[0] == 200
    member_of(syncd, uid, org, "acme", "org:admin", t)
    eventually(rds, f"user:{uid}", {"roles": f"user {org}/org:admin"})
    # A rename changes the slug, not the role: nothing for `acme` to reuse.
    assert syncd.deliver("organization.updated", org_data(org, "acme-renamed", t + 5))[0] == 200
    drained(pg)
    assert rds.hget(f"user:{uid}", "roles") == f"user {org}/org:admin"
    assert "acme" not in rds.hget(f"user:{uid}", "roles")


def test_organization_events_are_stored_in_order_and_deletion_is_final(syncd, pg):
    org, t = new_id("org"), now_ms()
    status, body, _ = syncd.deliver("organization.created", org_data(org, "acme", t))
    assert status == 200 and json.loads(body)["outcome"] == "applied", body
    assert org_row(pg, org) == ["acme", "Acme", "f", str(t)]
    # An older version arriving late changes nothing.
    status, body, _ = syncd.deliver("organization.updated", org_data(org, "old", t - 5))
    assert json.loads(body)["outcome"] == "stale"
    assert syncd.deliver("organization.updated", org_data(org, "acme2", t + 5, "Acme 2"))[0] == 200
    assert org_row(pg, org) == ["acme2", "Acme 2", "f", str(t + 5)]
    stub = {"object": "organization", "id": org, "deleted": True}
    status, body, _ = syncd.deliver("organization.deleted", stub)
    assert json.loads(body)["outcome"] == "applied"
    assert org_row(pg, org)[2] == "t"
    status, body, _ = syncd.deliver("organization.updated", org_data(org, "back", t + 99))
    assert json.loads(body)["outcome"] == "stale"
    assert org_row(pg, org)[2] == "t" and org_row(pg, org)[0] == "acme2"
    # Deleted before it was created here: the late create cannot create it.
    early = new_id("org")
    assert syncd.deliver("organization.deleted", {"object": "organization", "id": early,
                                                  "deleted": True})[0] == 200
    status, body, _ = syncd.deliver("organization.created", org_data(early, "x", t))
    assert json.loads(body)["outcome"] == "stale"
    assert org_row(pg, early)[2] == "t"


def test_deleting_an_organization_ends_memberships_and_revokes_members(syncd, pg, rds):
    t = now_ms()
    ada, bob = new_id("user"), new_id("user")
    acme, globex = new_id("org"), new_id("org")
    for uid in (ada, bob):
        assert syncd.deliver("user.created", user_data(uid, t))[0] == 200
    assert syncd.deliver("organization.created", org_data(acme, "acme", t))[0] == 200
    member_of(syncd, ada, acme, "acme", "org:admin", t)
    member_of(syncd, ada, globex, "globex", "org:member", t + 1)
    member_of(syncd, bob, acme, "acme", "org:member", t)
    eventually(rds, f"user:{ada}", {"roles": f"user {acme}/org:admin {globex}/org:member"})
    eventually(rds, f"user:{bob}", {"roles": f"user {acme}/org:member"})
    drained(pg)
    revocations = Revocations(rds)
    try:
        assert syncd.deliver("organization.deleted",
                             {"object": "organization", "id": acme, "deleted": True})[0] == 200
        assert pg.scalar("SELECT count(*) FROM memberships WHERE organization_id = :'p1' "
                         "AND deleted_at IS NULL", acme) == "0"
        eventually(rds, f"user:{ada}", {"roles": f"user {globex}/org:member"})
        eventually(rds, f"user:{bob}", {"roles": "user"})
        revocations.wait(f"user {ada}", f"user {bob}")
    finally:
        revocations.close()
    # A membership event for the deleted organization arriving late is
    # stored as deleted: the role does not come back.
    late = membership_data(new_id("orgmem"), bob, "acme", "org:admin", t + 50)
    late["organization"]["id"] = acme
    assert syncd.deliver("organizationMembership.created", late)[0] == 200
    assert pg.scalar("SELECT deleted_at IS NOT NULL FROM memberships WHERE id = :'p1'",
                     late["id"]) == "t"
    drained(pg)
    assert rds.hget(f"user:{bob}", "roles") == "user"


def test_reconcile_rewrites_slug_roles_to_ids(syncd, pg, rds):
    uid, t, org = new_id("user"), now_ms(), new_id("org")
    assert syncd.deliver("user.created", user_data(uid, t))[0] == 200
    member_of(syncd, uid, org, "acme", "org:admin", t)
    eventually(rds, f"user:{uid}", {"roles": f"user {org}/org:admin"})
    drained(pg)
    # What an earlier syncd wrote.
    rds.hset(f"user:{uid}", "roles", "user acme/org:admin")
    out = syncd.run("reconcile").stdout
    assert "reconcile:" in out, out
    assert rds.hget(f"user:{uid}", "roles") == f"user {org}/org:admin"


def test_migration_rewrites_existing_roles_by_id(redis_server):
    """A database at schema 001 with rows and slug roles in Redis: `syncd
    migrate` then the daemon rewrite them without a manual reconcile."""
    rds = redis_server.client
    pg = Postgres()
    try:
        path = os.path.join(SOURCE_DIR, "schema", "001_initial.sql")
        with open(path, "rb") as f:
            sql = f.read()
        pg.query(sql.decode())
        pg.query("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                 "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        pg.query("INSERT INTO schema_migrations (version, name, checksum) "
                 "VALUES (1, '001_initial.sql', :'p1')", hashlib.sha256(sql).hexdigest())
        uid, org = new_id("user"), new_id("org")
        pg.query("INSERT INTO users (clerk_id, source_updated_at) VALUES (:'p1', 1)", uid)
        pg.query("INSERT INTO memberships (id, clerk_user_id, organization_id, organization_slug, "
                 "role, created_at, updated_at, source_updated_at) "
                 "VALUES (:'p1', :'p2', :'p3', 'acme', 'org:admin', now(), now(), 1)",
                 new_id("orgmem"), uid, org)
        rds.hset(f"user:{uid}", mapping={"role": "user", "roles": "user acme/org:admin",
                                         "status": "active"})
        daemon = Syncd(pg, redis_server)
        migrated = daemon.run("migrate")
        assert "1 already applied" in migrated.stdout  # 001; 002 and later applied now
        assert "applied migration 002_organizations_bans_idle.sql" in migrated.stderr
        daemon.start()
        try:
            eventually(rds, f"user:{uid}", {"roles": f"user {org}/org:admin"})
        finally:
            assert daemon.stop() == 0
    finally:
        pg.close()


# Item 11 ------------------------------------------------------------------

def session_status(pg, sid):
    return pg.scalar("SELECT status FROM sessions WHERE id = :'p1'", sid)


def test_ban_revokes_sessions_and_unban_revives_none(syncd, pg, rds):
    uid, t = new_id("user"), now_ms()
    assert syncd.deliver("user.created", user_data(uid, t))[0] == 200
    sids = [new_id("sess") for _ in range(2)]
    for sid in sids:
        assert syncd.deliver("session.created", session_data(sid, uid, updated_at=t))[0] == 200
        eventually(rds, f"sess:{sid}", {"user_id": uid})
    ended = new_id("sess")
    assert syncd.deliver("session.ended",
                         session_data(ended, uid, "ended", updated_at=t))[0] == 200
    drained(pg)
    revocations = Revocations(rds)
    try:
        ban_at = t + 10
        assert syncd.deliver("user.updated", user_data(uid, ban_at, banned=True))[0] == 200
        # In the ban's own transaction: answered 200 after COMMIT.
        assert [session_status(pg, s) for s in sids] == ["revoked", "revoked"]
        assert session_status(pg, ended) == "ended"  # final statuses are kept
        for sid in sids:
            tombstone(rds, f"sess:{sid}", "revoked")
        revocations.wait(f"user {uid}", *[f"session {s}" for s in sids])
    finally:
        revocations.close()
    # A session created before the ban that arrives after it is revoked too.
    late = new_id("sess")
    early = session_data(late, uid, updated_at=ban_at - 5)
    assert syncd.deliver("session.created", early)[0] == 200
    assert session_status(pg, late) == "revoked"
    # One created after the ban (an unban not yet delivered) is left alone.
    after = new_id("sess")
    created = session_data(after, uid, updated_at=ban_at + 20)
    created["created_at"] = ban_at + 20
    assert syncd.deliver("session.created", created)[0] == 200
    assert session_status(pg, after) == "active"
    # Unbanned: nothing revived.
    assert syncd.deliver("user.updated", user_data(uid, ban_at + 30))[0] == 200
    eventually(rds, f"user:{uid}", {"status": "active"})
    drained(pg)
    for sid in sids + [late]:
        assert session_status(pg, sid) == "revoked"
        assert rds.hgetall(f"sess:{sid}").get("user_id") is None, sid
    eventually(rds, f"sess:{after}", {"user_id": uid})


# Item 12 ------------------------------------------------------------------

def test_idle_timeout_is_written_on_session_hashes(syncd, pg, rds):
    uid, sid = new_id("user"), new_id("sess")
    assert syncd.deliver("session.created", session_data(sid, uid))[0] == 200
    h = eventually(rds, f"sess:{sid}", {"user_id": uid})
    assert h["idle_timeout"] == str(IDLE_TIMEOUT)


def test_session_hash_never_outlives_abandon_at(syncd, pg, rds):
    uid, sid = new_id("user"), new_id("sess")
    data = session_data(sid, uid)  # expires in an hour
    data["abandon_at"] = now_ms() + 120_000
    assert syncd.deliver("session.created", data)[0] == 200
    h = eventually(rds, f"sess:{sid}", {"user_id": uid})
    # The module's sliding expiry derives the TTL from expires_at: capped too.
    assert h["expires_at"] == str(data["abandon_at"])
    assert 0 < rds.pexpiretime(f"sess:{sid}") <= data["abandon_at"]


def test_session_past_abandon_at_is_a_tombstone(syncd, pg, rds):
    uid, sid = new_id("user"), new_id("sess")
    data = session_data(sid, uid)
    data["abandon_at"] = now_ms() - 1000
    assert syncd.deliver("session.created", data)[0] == 200
    tombstone(rds, f"sess:{sid}", "abandoned")
    # Clerk sends nothing when abandon_at passes: reconcile writes the end.
    sid2 = new_id("sess")
    data = session_data(sid2, uid)
    data["abandon_at"] = now_ms() + 1500
    assert syncd.deliver("session.created", data)[0] == 200
    eventually(rds, f"sess:{sid2}", {"user_id": uid})
    time.sleep(2)
    assert not rds.exists(f"sess:{sid2}")  # expired at abandon_at
    syncd.run("reconcile")
    tombstone(rds, f"sess:{sid2}", "abandoned")
