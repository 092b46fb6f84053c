"""syncd behind Redis Sentinel (issue 8): a primary, a replica and three
sentinels (tests/topology.py). syncd asks the sentinels for the primary,
follows a failover (the primary killed while webhooks are delivered; a
manual failover that leaves the old primary up as a replica answering
READONLY) and loses nothing: every delivered event ends up in Redis once."""

import os
import sys
import threading
import types

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import topology  # noqa: E402
from syncd_harness import Postgres, Syncd, new_id, now_ms, user_data, wait_for  # noqa: E402

USER = ("syncd", "sentinel-Acl-pw-3k9")


@pytest.fixture
def pg():
    """A database per test: the key count below is of this test's users
    (syncd's reconciliation projects every user of the database)."""
    server = Postgres()
    yield server
    server.close()


@pytest.fixture
def group(request, tmp_path):
    # An ACL user on the data nodes, sentinels without a password: syncd
    # authenticates to the primary only.
    yield from topology.managed(request, topology.SentinelGroup(str(tmp_path), user=USER))


def start_syncd(pg, group, prefix):
    url = group.address_url(credentials=True, db=0)
    return Syncd(pg, types.SimpleNamespace(url=url), prefix=prefix).start()


def stop(daemon):
    code = daemon.stop()
    log = daemon.read_log()
    assert USER[1] not in log
    assert code == 0, log
    return log


def deliver_users(daemon, uids, statuses):
    for uid in uids:
        status, _, _ = daemon.deliver("user.created",
                                      user_data(uid, now_ms(), email=uid + "@x.test"))
        statuses.append(status)


def all_projected(pg, group, prefix, uids):
    """Every user's key, with its own email, on the current primary; the
    outbox empty. Returns the number of user keys under `prefix`."""
    if pg.scalar("SELECT count(*) FROM outbox") != "0":
        return None
    try:
        with group.client(socket_timeout=2) as c:
            keys = list(c.scan_iter(match=prefix + "user:*", count=1000))
            pipe = c.pipeline(transaction=False)
            for uid in uids:
                pipe.hget(prefix + "user:" + uid, "email")
            emails = pipe.execute()
    except Exception:
        return None  # a failover in progress
    if emails != [uid + "@x.test" for uid in uids]:
        return None
    return len(keys)


def metrics(daemon):
    return daemon.request("GET", "/metrics")[1].splitlines()


def failovers(daemon):
    for line in metrics(daemon):
        if line.startswith("syncd_redis_failovers_total "):
            return int(line.split()[1])
    raise AssertionError("no syncd_redis_failovers_total")


def primary_is(daemon, address):
    """syncd_redis_primary_info names `address` (host, port), alone."""
    info = [line for line in metrics(daemon) if line.startswith("syncd_redis_primary_info{")]
    return info == ['syncd_redis_primary_info{address="%s:%d"} 1' % address]


def test_follows_the_primary_killed_under_load(pg, group):
    prefix = "sent1:"
    daemon = start_syncd(pg, group, prefix)
    old = group.primary()
    uids = [new_id("user") for _ in range(120)]
    statuses = []
    try:
        # Deliveries go on while the primary dies and the sentinels agree on
        # a new one (down-after 1 s): some are projected before, some wait
        # in the outbox through the failover.
        sender = threading.Thread(target=deliver_users, args=(daemon, uids, statuses))
        sender.start()
        wait_for(lambda: len(statuses) >= 40, timeout=60, what="40 deliveries")
        group.kill_primary("kill")
        new = group.wait_failover(old, timeout=60)
        sender.join(120)
        assert not sender.is_alive()
        assert statuses == [200] * len(uids)
        # Each event once: one key per user, no more, each with its data.
        count = wait_for(lambda: all_projected(pg, group, prefix, uids), timeout=60,
                         what="every user on the new primary")
        assert count == len(uids)
        # One failover, however syncd learnt of it (the subscription, or a
        # reconnection through the sentinels): counted once.
        wait_for(lambda: primary_is(daemon, new), timeout=30, what="the new primary in /metrics")
        assert failovers(daemon) == 1
    finally:
        log = stop(daemon)
    assert "Redis primary of \"mymaster\" is %s:%d" % old in log, log
    assert "Redis primary of \"mymaster\" is %s:%d" % new in log, log


def test_manual_failover_readonly_old_primary(pg, group):
    """SENTINEL FAILOVER: the old primary stays up and becomes a replica;
    the connection syncd holds to it answers READONLY to the next write."""
    prefix = "sent2:"
    daemon = start_syncd(pg, group, prefix)
    old = group.primary()
    announced = None
    first = [new_id("user") for _ in range(5)]
    try:
        deliver_users(daemon, first, [])
        wait_for(lambda: all_projected(pg, group, prefix, first), timeout=30,
                 what="the first users")
        assert primary_is(daemon, old) and failovers(daemon) == 0
        # syncd follows +switch-master on a sentinel: subscribed by now.
        wait_for(lambda: "following +switch-master on the sentinel at" in daemon.read_log(),
                 timeout=15, what="the sentinel subscription")
        with group.live_sentinels()[0].client() as s:
            s.execute_command("SENTINEL", "FAILOVER", "mymaster")
        new = group.wait_failover(old, timeout=60)
        # Announced by the sentinel, with no write of syncd's to notice it.
        announced = ('announced a new primary for "mymaster": %s:%d -> %s:%d'
                     % (old + new))
        wait_for(lambda: announced in daemon.read_log(), timeout=30,
                 what="the +switch-master announcement")
        wait_for(lambda: primary_is(daemon, new), timeout=15, what="the new primary in /metrics")
        # (Twice when a reconnection reached the old primary, still up, on
        # the word of a sentinel that had not heard yet.)
        assert failovers(daemon) >= 1
        later = [new_id("user") for _ in range(5)]
        deliver_users(daemon, later, [])
        count = wait_for(lambda: all_projected(pg, group, prefix, first + later), timeout=60,
                         what="every user on the new primary")
        assert count == len(first) + len(later)
        # The sentinels turn the old primary into a replica of the new one.
        wait_for(lambda: group.node_at(old).role() == "slave", timeout=30,
                 what="the old primary to be a replica")
    finally:
        log = stop(daemon)
    assert "Redis primary of \"mymaster\" is %s:%d" % new in log, log
    # How syncd learns of it depends on timing: the sentinel's +switch-master
    # (above) usually comes first and the next batch reconnects without an
    # error; else its writes to the old primary are not acknowledged by a
    # replica (WAIT: the promoted one left), or the old primary answers
    # READONLY, or the sentinels close its clients.
    assert (announced in log or "no replica acknowledged the writes" in log
            or "answered READONLY" in log or "closed the connection" in log
            or "cannot send" in log), log


def test_readonly_replica_is_retried(pg, tmp_path):
    """A server that turns replica under syncd's connection (a failover that
    moves a DNS name, or REPLICAOF by hand: nothing closes the connection)
    answers READONLY: syncd reconnects and retries until it is a primary
    again, and loses nothing."""
    other = topology.RedisNode(str(tmp_path), name="other")
    node = topology.RedisNode(str(tmp_path), name="data")
    prefix = "ro:"
    daemon = Syncd(pg, types.SimpleNamespace(url=node.url(db=0)), prefix=prefix).start()
    try:
        first = new_id("user")
        deliver_users(daemon, [first], [])
        with node.client() as c:
            wait_for(lambda: c.hget(prefix + "user:" + first, "email"), timeout=15,
                     what="the first user")
            c.execute_command("REPLICAOF", other.host, other.port)
            wait_for(lambda: c.execute_command("ROLE")[0] == "slave", timeout=15,
                     what="the replica role")
        later = new_id("user")
        deliver_users(daemon, [later], [])
        wait_for(lambda: "answered READONLY" in daemon.read_log(), timeout=15,
                 what="READONLY in syncd's log")
        assert pg.scalar("SELECT count(*) FROM outbox") != "0"  # kept for the retry
        with node.client() as c:
            c.execute_command("REPLICAOF", "NO", "ONE")
            # Its data is now `other`'s (empty): syncd's marker check
            # rebuilds the projection, and the outbox is applied.
            wait_for(lambda: c.hget(prefix + "user:" + later, "email") == later + "@x.test"
                     and c.hget(prefix + "user:" + first, "email") == first + "@x.test",
                     timeout=30, what="both users on the primary again")
        wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", timeout=15,
                 what="the outbox drained")
    finally:
        stop(daemon)
        node.stop()
        other.stop()
