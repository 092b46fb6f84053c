"""The write-back of the application's id and role into Clerk's
public_metadata (issue 9): a real syncd, PostgreSQL and Redis, and the
stand-in Backend API, which records every PATCH and merges metadata as
Clerk does. "No PATCH" is checked without waiting on a clock: the queue
row is written in the webhook's own transaction, so once the webhook has
answered, an empty queue for that user means nothing will be sent."""

import json
import signal
import urllib.request

import pytest

from clerk_backend_standin import ClerkBackendStandin, make_user
from syncd_harness import Syncd, membership_data, new_id, now_ms, wait_for


@pytest.fixture(scope="module")
def standin():
    with ClerkBackendStandin() as server:
        server.set_jwks({"keys": [{"kid": "ins_test", "kty": "RSA", "n": "AQAB", "e": "AQAB"}]})
        yield server


def writeback_env(standin, on=True):
    return {"SYNCD_CLERK_SECRET_KEY": standin.secret,
            "SYNCD_CLERK_API_URL": standin.url,
            "SYNCD_CLERK_WRITEBACK": "on" if on else "off"}


@pytest.fixture
def daemon(pg, redis_server, standin):
    standin.clear_failures()
    d = Syncd(pg, redis_server, extra_env=writeback_env(standin)).start()
    yield d
    code = d.stop()
    log = d.read_log()
    assert standin.secret not in log
    assert code == 0, log



def queued(pg, user_id):
    return pg.scalar("SELECT count(*) FROM writeback WHERE clerk_user_id = :'p1'", user_id)


def db_id(pg, user_id):
    return pg.scalar("SELECT id FROM users WHERE clerk_id = :'p1' AND deleted_at IS NULL", user_id)


def patches_for(standin, user_id):
    return standin.requests_to(f"/v1/users/{user_id}/metadata", method="PATCH")


def deliver_user(d, event_type, user):
    status, text, _ = d.deliver(event_type, user)
    assert status == 200, text
    return json.loads(text)["outcome"]


def create_user(d, standin, role=None, public_metadata=None):
    """A user that exists at the stand-in, created in syncd by its webhook."""
    user = standin.add_user(make_user(new_id("user"), role=role,
                                      public_metadata=public_metadata))
    assert deliver_user(d, "user.created", user) == "applied"
    return user


def sent(standin, pg, user_id, n=1):
    """Waits for n accepted PATCHes for the user and an empty queue."""
    wait_for(lambda: len([r for r in patches_for(standin, user_id) if r.status == 200]) >= n,
             timeout=30, what=f"{n} accepted PATCH for {user_id}")
    wait_for(lambda: queued(pg, user_id) == "0", timeout=30, what="the queue row to go")


def test_created_user_gets_one_patch_with_id_and_role(daemon, standin, pg):
    user = create_user(daemon, standin, role="admin", public_metadata={"plan": "pro"})
    sent(standin, pg, user["id"])
    [patch] = patches_for(standin, user["id"])
    assert patch.body == {"public_metadata": {"dbId": db_id(pg, user["id"]), "role": "admin"}}
    # Merged, not clobbered: the other key is still there.
    meta = standin.get_user(user["id"])["public_metadata"]
    assert meta == {"plan": "pro", "role": "admin", "dbId": db_id(pg, user["id"])}


def test_user_without_a_role_gets_only_its_id(daemon, standin, pg):
    user = create_user(daemon, standin)
    sent(standin, pg, user["id"])
    [patch] = patches_for(standin, user["id"])
    assert patch.body == {"public_metadata": {"dbId": db_id(pg, user["id"])}}
    assert "role" not in standin.get_user(user["id"])["public_metadata"]


def test_the_echo_of_the_write_back_sends_nothing(daemon, standin, pg):
    user = create_user(daemon, standin, role="editor")
    sent(standin, pg, user["id"])
    # What Clerk sends back after the PATCH: user.updated, newer, with the
    # dbId and role syncd wrote.
    echo = standin.get_user(user["id"])
    assert echo["public_metadata"]["dbId"] == db_id(pg, user["id"])
    assert deliver_user(daemon, "user.updated", echo) == "applied"
    assert queued(pg, user["id"]) == "0"
    assert len(patches_for(standin, user["id"])) == 1


def test_role_change_patches_and_unrelated_update_does_not(daemon, standin, pg):
    user = create_user(daemon, standin, role="viewer")
    sent(standin, pg, user["id"])
    renamed = standin.update_user(user["id"], first_name="Augusta")
    assert deliver_user(daemon, "user.updated", renamed) == "applied"
    assert queued(pg, user["id"]) == "0"
    assert len(patches_for(standin, user["id"])) == 1
    promoted = standin.update_user(user["id"], public_metadata={
        **standin.get_user(user["id"])["public_metadata"], "role": "admin"})
    assert deliver_user(daemon, "user.updated", promoted) == "applied"
    sent(standin, pg, user["id"], n=2)
    last = patches_for(standin, user["id"])[-1]
    assert last.body == {"public_metadata": {"dbId": db_id(pg, user["id"]), "role": "admin"}}


def test_organization_role_change_patches(daemon, standin, pg):
    user = create_user(daemon, standin, role="member")
    sent(standin, pg, user["id"])
    mem_id = new_id("orgmem")
    t = now_ms()
    status, text, _ = daemon.deliver("organizationMembership.created",
                                     membership_data(mem_id, user["id"], role="org:member",
                                                     updated_at=t))
    assert status == 200, text
    sent(standin, pg, user["id"], n=2)
    status, text, _ = daemon.deliver("organizationMembership.updated",
                                     membership_data(mem_id, user["id"], role="org:admin",
                                                     updated_at=t + 10))
    assert status == 200, text
    sent(standin, pg, user["id"], n=3)
    # The same membership again, nothing changed: nothing queued.
    status, text, _ = daemon.deliver("organizationMembership.updated",
                                     membership_data(mem_id, user["id"], role="org:admin",
                                                     updated_at=t + 20))
    assert status == 200, text
    assert queued(pg, user["id"]) == "0"
    assert len(patches_for(standin, user["id"])) == 3


def test_changes_while_pending_coalesce_into_the_latest_state(daemon, standin, pg):
    standin.fail_after(0, 503, method="PATCH")
    user = create_user(daemon, standin, role="viewer")
    wait_for(lambda: pg.scalar("SELECT attempts FROM writeback WHERE clerk_user_id = :'p1'",
                               user["id"]) not in (None, "0"),
             timeout=30, what="a failed attempt")
    promoted = standin.update_user(user["id"], public_metadata={"role": "admin"})
    assert deliver_user(daemon, "user.updated", promoted) == "applied"
    assert pg.scalar("SELECT count(*) || ' ' || max(generation) FROM writeback "
                     "WHERE clerk_user_id = :'p1'", user["id"]) == "1 2"
    standin.clear_failures()
    sent(standin, pg, user["id"])
    accepted = [r for r in patches_for(standin, user["id"]) if r.status == 200]
    assert [r.body for r in accepted] == [
        {"public_metadata": {"dbId": db_id(pg, user["id"]), "role": "admin"}}]


def test_transient_failures_are_retried(daemon, standin, pg):
    failures = daemon.metric("syncd_writeback_failures_total")
    standin.fail_next(2, 503, method="PATCH")
    standin.fail_next(1, 429, retry_after="1", method="PATCH")
    user = create_user(daemon, standin, role="admin")
    sent(standin, pg, user["id"])
    attempts = patches_for(standin, user["id"])
    assert [r.status for r in attempts] == [503, 503, 429, 200]
    # Retry-After is a floor.
    assert attempts[3].time - attempts[2].time >= 0.9
    assert daemon.metric("syncd_writeback_failures_total") == failures + 3


def test_user_gone_from_clerk_is_dropped(daemon, standin, pg):
    dropped = daemon.metric("syncd_writeback_dropped_total")
    user = make_user(new_id("user"), role="admin")  # never added to the stand-in
    assert deliver_user(daemon, "user.created", user) == "applied"
    wait_for(lambda: queued(pg, user["id"]) == "0", timeout=30, what="the row to be dropped")
    assert [r.status for r in patches_for(standin, user["id"])] == [404]
    assert daemon.metric("syncd_writeback_dropped_total") == dropped + 1


def test_write_back_off_sends_nothing(pg, redis_server, standin):
    d = Syncd(pg, redis_server, extra_env=writeback_env(standin, on=False)).start()
    try:
        user = standin.add_user(make_user(new_id("user"), role="admin"))
        assert deliver_user(d, "user.created", user) == "applied"
        assert queued(pg, user["id"]) == "0"
        assert patches_for(standin, user["id"]) == []
    finally:
        assert d.stop() == 0


def test_clerk_down_never_delays_webhooks_and_the_queue_survives_a_crash(
        pg, redis_server, standin):
    standin.fail_after(0, 503, method="PATCH")  # every PATCH fails until cleared
    d = Syncd(pg, redis_server, extra_env=writeback_env(standin)).start()
    try:
        users = [create_user(d, standin, role="admin") for _ in range(3)]
        wait_for(lambda: pg.scalar("SELECT min(attempts) FROM writeback WHERE clerk_user_id "
                                   "= ANY(string_to_array(:'p1', ','))",
                                   ",".join(u["id"] for u in users)) not in (None, "0"),
                 timeout=30, what="a failed attempt for every user")
        # Webhooks go on answering and committing while Clerk fails.
        for _ in range(5):
            extra = standin.add_user(make_user(new_id("user")))
            assert deliver_user(d, "user.created", extra) == "applied"
            assert db_id(pg, extra["id"]) is not None
        wait_for(lambda: d.metric("syncd_writeback_queue_depth") >= 8, timeout=10,
                 what="the queue depth metric")
        wait_for(lambda: d.metric("syncd_writeback_oldest_age_seconds") > 0, timeout=10,
                 what="the oldest age metric")
        assert d.metric("syncd_writeback_failures_total") >= 3
        error = pg.scalar("SELECT last_error FROM writeback WHERE clerk_user_id = :'p1'",
                          users[0]["id"])
        assert error == "HTTP 503"
        d.stop(signal.SIGKILL)
    finally:
        if d.proc:
            d.stop()
    assert all(queued(pg, u["id"]) == "1" for u in users)
    standin.clear_failures()
    d = Syncd(pg, redis_server, extra_env=writeback_env(standin)).start()
    try:
        for u in users:
            sent(standin, pg, u["id"])
            assert patches_for(standin, u["id"])[-1].body == {
                "public_metadata": {"dbId": db_id(pg, u["id"]), "role": "admin"}}
        wait_for(lambda: pg.scalar("SELECT count(*) FROM writeback") == "0", timeout=30,
                 what="the whole queue to be sent")
        wait_for(lambda: d.metric("syncd_writeback_queue_depth") == 0, timeout=10,
                 what="the depth metric to fall to 0")
    finally:
        assert d.stop() == 0
    log = d.read_log()
    assert standin.secret not in log
