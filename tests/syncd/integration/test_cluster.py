"""syncd on Redis Cluster (issue 8): three primaries (tests/topology.py's
RedisCluster), syncd given cluster://seeds. Users, sessions and the
per-user sets are spread over the three and each is written whole on its
own slot's primary; revocations published on one node reach a subscriber
on every other; a resharding while webhooks arrive is followed (MOVED), a
half-migrated slot too (ASK), and every event lands once; `syncd
reconcile` rebuilds a cluster flushed on every node. Real PostgreSQL,
redis-server in cluster mode and syncd."""

import os
import sys
import threading
import time
import types

import pytest
import redis.crc

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import topology  # noqa: E402
from syncd_harness import Postgres, Syncd, new_id, now_ms, session_data, user_data, wait_for  # noqa: E402,E501

PASSWORD = "cluster-pw-Zr4q"


@pytest.fixture(scope="module")
def pg():
    server = Postgres()
    yield server
    server.close()


@pytest.fixture
def own_pg():
    """For a syncd of its own: syncds on one database share its outbox, and
    the module's daemon would project this test's events to its cluster."""
    server = Postgres()
    yield server
    server.close()


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory):
    # requirepass on every node: syncd authenticates on each connection.
    yield from topology.managed(request, topology.RedisCluster(
        str(tmp_path_factory.mktemp("cluster")), primaries=3, password=PASSWORD))


@pytest.fixture(scope="module")
def daemon(pg, cluster):
    d = Syncd(pg, types.SimpleNamespace(url=cluster.seed_url(credentials=True)),
              prefix="c:").start()
    yield d
    code = d.stop()
    log = d.read_log()
    assert PASSWORD not in log
    assert code == 0, log



APPLIED = 'syncd_events_total{type="user.created",outcome="applied"}'


def drained(pg):
    wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", timeout=30,
             what="the outbox drained")


def snapshot(cluster, prefix):
    """Every key under `prefix` on every primary: {key: (value, has ttl,
    node port)}; the marker left out."""
    out = {}
    for node in cluster.primaries():
        with node.client() as c:
            for key in c.scan_iter(match=prefix + "*", count=1000):
                if key.endswith("syncd:marker"):
                    continue
                value = c.smembers(key) if c.type(key) == "set" else c.hgetall(key)
                out[key] = (value, c.pttl(key) > 0, node.port)
    return out


def deliver_user(daemon, uid, email=None):
    status, _, _ = daemon.deliver("user.created",
                                  user_data(uid, now_ms(), email=email or uid + "@x.test"))
    assert status == 200
    return uid


def uid_in_slots(prefix, slots):
    """A new user id whose user key hashes to one of `slots`."""
    slots = set(slots)
    while True:
        uid = new_id("user")
        if redis.crc.key_slot((prefix + "user:" + uid).encode()) in slots:
            return uid


def test_users_and_sessions_spread_over_three_primaries(pg, cluster, daemon):
    uids = [deliver_user(daemon, new_id("user")) for _ in range(24)]
    sids = {}
    for uid in uids:
        sids[uid] = [new_id("sess") for _ in range(2)]
        for sid in sids[uid]:
            assert daemon.deliver("session.created", session_data(sid, uid))[0] == 200
    drained(pg)
    snap = snapshot(cluster, "c:")
    # Each key on its own slot's primary, and all three hold some.
    assert {port for _, _, port in snap.values()} == {n.port for n in cluster.primaries()}
    for key, (_, _, port) in snap.items():
        assert cluster.slot_owner(key).port == port, key
    with cluster.client() as rc:
        for uid in uids:
            user = rc.hgetall("c:user:" + uid)
            assert user["email"] == uid + "@x.test"
            assert rc.smembers("c:user_sessions:" + uid) == set(sids[uid])
            for sid in sids[uid]:
                sess = rc.hgetall("c:sess:" + sid)
                # Contract v2: the session hash carries its user's copy.
                assert sess["user_id"] == uid and sess["email"] == uid + "@x.test", sess
                assert rc.pttl("c:sess:" + sid) > 0
    _, text = daemon.request("GET", "/metrics")
    for node in cluster.primaries():
        assert f'syncd_redis_primary_info{{address="{node.address()}"}} 1' in text, text


def test_revocations_reach_subscribers_on_every_node(pg, cluster, daemon):
    uid = deliver_user(daemon, new_id("user"))
    sid = new_id("sess")
    assert daemon.deliver("session.created", session_data(sid, uid))[0] == 200
    drained(pg)
    # A subscriber on each primary: syncd publishes on one of them, and
    # Cluster carries a PUBLISH to every node's subscribers.
    subs = []
    for node in cluster.primaries():
        c = node.client()
        p = c.pubsub(ignore_subscribe_messages=True)
        p.subscribe("c:session:revocations")
        subs.append((c, p))
    try:
        t = now_ms() + 5
        assert daemon.deliver("session.revoked",
                              session_data(sid, uid, "revoked", updated_at=t))[0] == 200
        for c, p in subs:
            msg = wait_for(lambda: p.get_message(timeout=0.1), timeout=15,
                           what="the revocation on every node")
            assert msg["data"] == "session " + sid
    finally:
        for c, p in subs:
            p.close()
            c.close()


def test_resharding_under_load_moved_and_ask(pg, cluster, daemon):
    prefix = "c:"
    applied_before = daemon.metric(APPLIED, 0)
    moved_before = daemon.metric("syncd_redis_moved_total")
    ask_before = daemon.metric("syncd_redis_ask_total")
    a, b = cluster.primaries()[:2]
    uids, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            uids.append(deliver_user(daemon, new_id("user")))

    # Webhooks keep coming while redis-cli moves slots and their keys.
    sender = threading.Thread(target=load)
    sender.start()
    try:
        wait_for(lambda: len(uids) >= 10, timeout=30, what="deliveries under way")
        before = len(uids)
        moved_slots = cluster.reshard(a, b, 300)
        during = len(uids) - before
    finally:
        stop.set()
        sender.join(60)
    assert moved_slots and during > 0
    # syncd's map still has those slots on `a`: keys there get MOVED.
    later = [deliver_user(daemon, uid_in_slots(prefix, moved_slots)) for _ in range(3)]

    # A slot left half-migrated: a key not (yet) on the source gets ASK.
    slot = cluster.slots_of(b)[-1]
    cluster.begin_migration(slot, b, a)
    try:
        cluster.migrate_keys(slot, b, a)
        asked = deliver_user(daemon, uid_in_slots(prefix, [slot]))
        drained(pg)
    finally:
        cluster.finish_migration(slot, a)

    drained(pg)
    everyone = uids + later + [asked]
    with cluster.client() as rc:
        for uid in everyone:
            assert rc.hget(prefix + "user:" + uid, "email") == uid + "@x.test", uid
    # Exactly once: each event applied once, each user's key where its slot
    # is now (the ASKed one on the node that imported its slot).
    assert daemon.metric(APPLIED) - applied_before == len(everyone)
    snap = snapshot(cluster, prefix + "user:")
    for uid in everyone:
        assert snap[prefix + "user:" + uid][2] == cluster.slot_owner(prefix + "user:" + uid).port
    assert snap[prefix + "user:" + asked][2] == a.port
    assert daemon.metric("syncd_redis_moved_total") > moved_before
    assert daemon.metric("syncd_redis_ask_total") > ask_before
    # Redirections are followed in the same batch: no batch failed.
    retried = [line for line in daemon.read_log().splitlines()
               if "projector: " in line and "will retry" in line]
    assert retried == []


def test_reconcile_rebuilds_a_flushed_cluster(pg, cluster, daemon):
    prefix = "c:"
    uid = deliver_user(daemon, new_id("user"))
    sid = new_id("sess")
    assert daemon.deliver("session.created", session_data(sid, uid))[0] == 200
    drained(pg)
    wait_for(lambda: snapshot(cluster, prefix).get(prefix + "sess:" + sid), what="the session")
    before = snapshot(cluster, prefix)
    assert len({port for _, _, port in before.values()}) == 3
    for node in cluster.primaries():
        with node.client() as c:
            c.flushall()
    assert snapshot(cluster, prefix) == {}
    out = daemon.run("reconcile").stdout
    assert "users checked" in out, out
    assert snapshot(cluster, prefix) == before
    with cluster.client() as rc:
        assert rc.get(prefix + "syncd:marker").startswith("reconciled")


def test_tls_cluster(own_pg, tmp_path):
    """The TLS settings apply to every node: seeds and the primaries that
    CLUSTER SLOTS names (by IP address, verified against the certificate's
    IP entry)."""
    pki = topology.shared_pki()
    with topology.RedisCluster(str(tmp_path), primaries=3, pki=pki) as tls_cluster:
        d = Syncd(own_pg, types.SimpleNamespace(url=tls_cluster.seed_url()), prefix="t:",
                  extra_env={"SYNCD_REDIS_TLS": "on", "SYNCD_REDIS_CA_FILE": pki.ca_cert}).start()
        try:
            uids = [deliver_user(d, new_id("user")) for _ in range(12)]
            drained(own_pg)
            snap = snapshot(tls_cluster, "t:user:")
            assert sorted(snap) == sorted("t:user:" + uid for uid in uids)
            assert len({port for _, _, port in snap.values()}) == 3
            assert d.metric("syncd_redis_tls_handshake_failures_total") == 0
        finally:
            assert d.stop() == 0


def test_primary_killed_replica_takes_over(own_pg, tmp_path):
    """A primary dies while webhooks arrive: the connections to it fail,
    the projector retries on a new slot map from another node, and once its
    replica has taken over every event is there, once."""
    with topology.RedisCluster(str(tmp_path), primaries=3, replicas=True) as rc_cluster:
        d = Syncd(own_pg, types.SimpleNamespace(url=rc_cluster.seed_url()), prefix="k:").start()
        uids, stop = [], threading.Event()

        def load():
            while not stop.is_set():
                uids.append(deliver_user(d, new_id("user")))

        sender = threading.Thread(target=load)
        try:
            sender.start()
            wait_for(lambda: len(uids) >= 10, timeout=30, what="deliveries under way")
            victim = rc_cluster.kill_primary()
            rc_cluster.wait_ok(timeout=60)  # its replica promoted
            wait_for(lambda: len(uids) >= 40, timeout=30, what="deliveries after the failover")
            stop.set()
            sender.join(60)
            drained(own_pg)
            snap = snapshot(rc_cluster, "k:user:")
            for uid in uids:
                assert snap["k:user:" + uid][0]["email"] == uid + "@x.test", uid
            assert victim.port not in {port for _, _, port in snap.values()}
            assert d.metric(APPLIED) == len(uids)
        finally:
            stop.set()
            sender.join(60)
            assert d.stop() == 0
        log = d.read_log()
        assert f"Redis at {victim.address()}" in log, log
