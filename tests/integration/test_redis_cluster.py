"""session_redis cluster://: the module fetches the slot map with CLUSTER
SLOTS, sends each read to the primary of its key's slot on a connection of
its own per primary, follows MOVED (a reshard) and ASK (a slot held in
migration) without ever answering a request from a redirection, reads a
version 1 session's user hash on its own shard, and hears revocations
published on any node.

Real servers only: tests/topology.py's RedisCluster (three primaries on
ports chosen at run time)."""

import collections
import os
import time

import pytest
import redis

import harness
import jwt_suite  # puts tests/clerk on sys.path
import tokens as T
import topology
from jwt_suite import _redacted_responses, keys  # noqa: F401: fixtures
from harness import (Load, METRICS_LOCATION, app_location, cookie, metric, nginx_test_config,
                     parse_metrics, seed_session, seed_session_v2, seed_user, wait_until)

TIMEOUTS = "timeout=1s connect_timeout=1s"
MOVED = "nginx_session_redis_moved_total"
ASK = "nginx_session_redis_ask_total"


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory):
    yield from topology.managed(request, topology.RedisCluster(
        str(tmp_path_factory.mktemp("cluster"))))


def start(nginx, cluster, cache=False, **kw):
    http = "session_redis %s %s;" % (cluster.seed_url(), TIMEOUTS)
    directives = "session_cache off;"
    if cache:
        http += "\n    session_cache_zone sess:1m ttl=120s;"
        directives = "session_cache sess;"
    return nginx(http=http, server=app_location("/app/", directives) + METRICS_LOCATION, **kw)


def metrics(n):
    resp = n.get("/metrics")
    assert resp.status == 200, resp
    return parse_metrics(resp.body)[0]


def slot(key):
    return redis.crc.key_slot(key.encode())


def first_pass(n, sid):
    """A worker asks a seed for the slot map as it starts; a check that
    comes before its connections are up fails fast (503)."""
    return wait_until(lambda: (lambda r: r if r.status == 200 else None)(
        n.get("/app/", headers=cookie(sid))), 15, what="a check to pass")


def hmgets(node):
    stats = node.client().info("commandstats")
    return int(stats.get("cmdstat_hmget", {}).get("calls", 0))


def test_sessions_spread_over_the_primaries(nginx, cluster, upstream):
    c = cluster.client()
    sids = ["spread_%d" % i for i in range(30)]
    for i, sid in enumerate(sids):
        seed_session_v2(c, sid, "user_spread_%d" % i, role="admin")
    seed_session_v2(c, "spread_revoked", "user_r", status="revoked")
    owners = {cluster.slot_owner("sess:" + sid).port for sid in sids}
    assert len(owners) == 3, "the sessions landed on every primary"
    before = {p.port: hmgets(p) for p in cluster.primaries()}
    n = start(nginx, cluster)
    first_pass(n, sids[0])
    for i, sid in enumerate(sids):
        resp = n.get("/app/", headers=cookie(sid))
        assert resp.status == 200, (sid, resp)
        assert resp.upstream_header("X-User-Id") == "user_spread_%d" % i
        assert resp.upstream_header("X-User-Role") == "admin"
    assert n.get("/app/", headers=cookie("spread_none")).status == 401
    assert n.get("/app/", headers=cookie("spread_revoked")).status == 401
    # Each primary answered reads: routed by slot, not all sent to a seed.
    for p in cluster.primaries():
        assert hmgets(p) > before[p.port], p.address()


def test_version_one_user_hash_on_another_shard(nginx, cluster, upstream):
    c = cluster.client()
    sid = "v1_cross"
    user = next("user_cross_%d" % i for i in range(1000)
                if cluster.slot_owner(slot=slot("user:user_cross_%d" % i))
                is not cluster.slot_owner("sess:" + sid))
    seed_session(c, sid, user)
    seed_user(c, user, role="admin", email="cross@example.com")
    n = start(nginx, cluster)
    resp = first_pass(n, sid)
    assert resp.upstream_header("X-User-Id") == user
    assert resp.upstream_header("X-User-Role") == "admin"
    assert resp.upstream_header("X-User-Email") == "cross@example.com"
    c.hset("user:" + user, "status", "banned")
    assert n.get("/app/", headers=cookie(sid)).status == 401


def test_revocation_published_on_one_node(nginx, cluster, upstream):
    c = cluster.client()
    seed_session_v2(c, "sess_rev_cluster", "user_rev", role="admin")
    n = start(nginx, cluster, cache=True)
    first_pass(n, "sess_rev_cluster")
    c.hset("sess:sess_rev_cluster", "status", "revoked")
    # Still cached: only the message makes the revocation land before ttl.
    assert n.get("/app/", headers=cookie("sess_rev_cluster")).status == 200
    node = cluster.primaries()[-1]

    def revoked():
        node.client().publish("session:revocations", "session sess_rev_cluster")
        time.sleep(0.1)
        return n.get("/app/", headers=cookie("sess_rev_cluster")).status == 401
    wait_until(revoked, 10, interval=0.2, what="the revocation message to drop the entry")


def test_slot_in_ask_state_is_followed(nginx, cluster, upstream):
    c = cluster.client()
    # Tokens have no braces (no hash tags): two that share a slot, and a
    # third in it for a session that does not exist.
    seen, same = {}, []
    for i in range(100000):
        t = "ask_%d" % i
        seen.setdefault(slot("sess:" + t), []).append(t)
        if len(seen[slot("sess:" + t)]) == 3:
            same = seen[slot("sess:" + t)]
            break
    sid, staying, missing = same
    seed_session_v2(c, sid, "user_ask_m")
    seed_session_v2(c, staying, "user_ask_s")
    src = cluster.slot_owner("sess:" + sid)
    dst = next(p for p in cluster.primaries() if p is not src)
    s = slot("sess:" + sid)
    assert slot("sess:" + staying) == s
    n = start(nginx, cluster)
    first_pass(n, staying)
    cluster.begin_migration(s, src, dst)
    try:
        assert cluster.migrate_keys(s, src, dst, keys=["sess:" + sid]) == ["sess:" + sid]
        asks = metric(metrics(n), ASK)
        resp = n.get("/app/", headers=cookie(sid))
        assert resp.status == 200, resp
        assert resp.upstream_header("X-User-Id") == "user_ask_m"
        assert metric(metrics(n), ASK) > asks
        assert n.get("/app/", headers=cookie(staying)).status == 200  # still on the source
        assert n.get("/app/", headers=cookie(missing)).status == 401
    finally:
        cluster.migrate_keys(s, src, dst)
        cluster.finish_migration(s, dst)
    resp = n.get("/app/", headers=cookie(sid))
    assert resp.status == 200, resp


def test_reshard_under_load_follows_moved(nginx, cluster, upstream):
    c = cluster.client()
    sids = ["load_%d" % i for i in range(2000)]
    pipe = c.pipeline()
    for i, sid in enumerate(sids):
        seed_session_v2(pipe, sid, "user_load_%d" % (i % 50))
    pipe.execute()
    n = start(nginx, cluster)
    first_pass(n, sids[0])
    moved_before = metric(metrics(n), MOVED)
    load = Load(n, sids[::7])
    try:
        src, dst = cluster.primaries()[:2]
        moved = set(cluster.reshard(src, dst, 100))
    finally:
        results = load.stop()
    # Every session whose slot moved, now: the first of them hits the old
    # owner (the module's map is stale until a MOVED), which answers MOVED.
    in_moved = [sid for sid in sids if slot("sess:" + sid) in moved]
    assert in_moved, "some sessions live in the moved slots"
    for sid in in_moved:
        resp = n.get("/app/", headers=cookie(sid))
        assert resp.status == 200, (sid, resp)
    assert metric(metrics(n), MOVED) > moved_before
    assert results, "the load ran"
    wrong = [(r.token, r.status) for r in results if r.status != 200]
    assert not wrong, "%d of %d requests answered wrong: %s" % (len(wrong), len(results),
                                                                 wrong[:10])


key = jwt_suite.key_fixture("ins_cluster")


def test_jwt_overlay_reads_two_shards(nginx, cluster, upstream, key, keys):
    """JWT mode's two HMGETs (session key, user key) on two shards at once;
    tokens never reach an assertion message (T.redact)."""
    c = cluster.client()
    sid = "sess_jwt_cluster"
    user = next("user_jwt_%d" % i for i in range(1000)
                if cluster.slot_owner(slot=slot("user:user_jwt_%d" % i))
                is not cluster.slot_owner("sess:" + sid))
    seed_session(c, sid, user)
    seed_user(c, user, role="admin", email="jwt@example.com")
    n = jwt_suite.start(nginx, cluster.seed_url(), keys, redis_params=TIMEOUTS)
    t = jwt_suite.tok(key, user, sid)
    resp = wait_until(lambda: (lambda r: r if r.status == 200 else None)(
        n.get("/app/", headers=jwt_suite.session_cookie(t))), 15, what="a JWT check to pass")
    assert resp.upstream_header("X-User-Role") == "admin", T.redact(resp)
    assert resp.upstream_header("X-User-Email") == "jwt@example.com", T.redact(resp)
    c.hset("user:" + user, "status", "banned")  # the user's shard
    jwt_suite.expect(n.get("/app/", headers=jwt_suite.session_cookie(t)), 401)
    c.hdel("user:" + user, "status")
    jwt_suite.expect(n.get("/app/", headers=jwt_suite.session_cookie(t)), 200)
    c.hset("sess:" + sid, "status", "revoked")  # the session's shard
    jwt_suite.expect(n.get("/app/", headers=jwt_suite.session_cookie(t)), 401)
    jwt_suite.assert_not_logged(n, t)


@pytest.fixture
def own_cluster(request, tmp_path):
    """own_cluster(**RedisCluster options): a fresh cluster for one test."""
    yield from topology.made_per_test(request, tmp_path, topology.RedisCluster, "cluster")


def test_tls_and_acl_user_on_every_node(nginx, own_cluster, upstream):
    pki = topology.shared_pki()
    cl = own_cluster(pki=pki, user=("clusteruser", "Cluster-Pw-1"))
    c = cl.client()
    sids = ["tls_%d" % i for i in range(12)]
    for sid in sids:
        seed_session_v2(c, sid, "user_" + sid)
    assert len({cl.slot_owner("sess:" + sid).port for sid in sids}) == 3
    n = nginx(http="session_redis %s tls ca=%s %s;" % (cl.seed_url(credentials=True),
                                                       pki.ca_cert, TIMEOUTS),
              server=app_location("/app/", "session_cache off;") + METRICS_LOCATION)
    first_pass(n, sids[0])
    for sid in sids:
        assert n.get("/app/", headers=cookie(sid)).status == 200, sid
    assert metric(metrics(n), "nginx_session_redis_tls_handshake_failures_total") == 0
    assert "Cluster-Pw-1" not in n.log()


def synced_replica(cl, victim):
    """The victim's replica once it holds every key of the victim (a replica
    promoted before its first sync would hold none: Redis's loss, not a
    wrong answer of the module)."""
    for rep in cl.replicas():
        info = rep.client().info("replication")
        if (int(info.get("master_port", 0)) == victim.port
                and info.get("master_link_status") == "up"
                and rep.client().dbsize() == victim.client().dbsize()):
            return rep
    return None


def outages(results, groups, normal, since):
    """{group: (Counter(status), first, last, sent)} of the answers from
    `since` on that were not the session's normal one (200 valid, 401
    revoked): how many per status, when the first and the last of them was
    sent (seconds after `since`), and how many requests of the group were
    sent in that stretch."""
    out = {}
    for group in set(groups.values()):
        mine = [r for r in results if groups[r.token] == group and r.started >= since]
        bad = [r for r in mine if r.status != normal[r.token]]
        if not bad:
            out[group] = (collections.Counter(), None, None, 0)
            continue
        first, last = bad[0].started, bad[-1].started
        out[group] = (collections.Counter(r.status for r in bad), first - since, last - since,
                      sum(1 for r in mine if first <= r.started <= last))
    return out


@pytest.mark.parametrize("full_coverage", ["yes", "no"])
def test_primary_killed_under_load(nginx, own_cluster, upstream, full_coverage):
    """A primary SIGKILLed under a closed loop of requests, its replica
    promoted after cluster-node-timeout: the checks of its slots fail fast
    (503) until the module's map names the replica, then pass again without
    a restart of nginx; never a 401 for a valid session nor a 200 for a
    revoked one. With cluster-require-full-coverage no, the other shards are
    not touched at all; with yes (Redis's default) every node answers
    CLUSTERDOWN from the moment the primary is marked failed until the
    promotion, which fails checks everywhere meanwhile (a failure, never an
    answer). The counts are printed, not asserted."""
    cl = own_cluster(replicas=True, node_timeout_ms=1000)
    for node in cl.nodes():
        node.client().config_set("cluster-require-full-coverage", full_coverage)
    c = cl.client()
    valid = ["fo_%d" % i for i in range(60)]
    revoked = ["fo_revoked_%d" % i for i in range(12)]
    for sid in valid:
        seed_session_v2(c, sid, "user_" + sid)
    for sid in revoked:
        seed_session_v2(c, sid, "user_" + sid, status="revoked")
    for p in cl.primaries():
        assert p.client().wait(1, 10000) == 1  # the replicas have them
    n = start(nginx, cl, workers=2)
    first_pass(n, valid[0])
    victim = cl.primaries()[0]
    replica = wait_until(lambda: synced_replica(cl, victim), 30,
                         what="the victim's replica to have its keys")
    normal = dict([(sid, 200) for sid in valid] + [(sid, 401) for sid in revoked])
    groups = {sid: "killed" if cl.slot_owner("sess:" + sid) is victim else "other"
              for sid in normal}
    on_victim = [sid for sid in valid if groups[sid] == "killed"]
    assert on_victim and len(on_victim) < len(valid)
    assert {groups[sid] for sid in revoked} == {"killed", "other"}

    def settled():
        # Every session answered normally, twice over (both workers have
        # their connections up), in the last requests.
        last = load.results[-2 * len(normal):]
        return len(last) == 2 * len(normal) and all(r.status == normal[r.token] for r in last)

    load = Load(n, list(normal))
    try:
        wait_until(settled, 30, what="normal answers before the kill")
        killed_at = time.monotonic()
        cl.kill_primary(victim)
        wait_until(lambda: replica.role() == "master", 30, interval=0.05,
                   what="the replica to be promoted")
        promoted_at = time.monotonic()
        cl.wait_ok()
        # Hang guards only: every session answers normally again, without
        # a restart of nginx (each worker refreshes its own map).
        mark = len(load.results)
        wait_until(lambda: len(load.results) >= mark + 4 * len(normal) and settled(), 60,
                   what="every session to answer normally again")
    finally:
        results = load.stop()
    for sid, status in normal.items():
        for _ in range(3):
            assert n.get("/app/", headers=cookie(sid)).status == status, sid

    wrong = [(r.token, r.status) for r in results
             if (normal[r.token] == 200 and r.status in (401, 403))
             or (normal[r.token] == 401 and r.status == 200)]
    assert not wrong, wrong[:10]
    assert {r.status for r in results} <= {200, 401, 503}, {r.status for r in results}
    out = outages(results, groups, normal, killed_at)
    if full_coverage == "no":
        assert not out["other"][0], out["other"]
    back = [r.started - killed_at for r in results if groups[r.token] == "killed"
            and r.status == 200 and out["killed"][1] is not None
            and r.started - killed_at > out["killed"][1]]
    print("\ncluster failover, cluster-require-full-coverage %s, cluster-node-timeout "
          "1000 ms, 2 workers, one closed-loop client: %d requests at %.0f/s; replica "
          "promoted %.2f s after the SIGKILL, first 200 on its slots again at %.2f s"
          % (full_coverage, len(results),
             len(results) / (results[-1].ended - results[0].started),
             promoted_at - killed_at, back[0] if back else 0))
    for group in ("killed", "other"):
        counts, first, last, sent = out[group]
        print("  %s slots: %s" % (
            "the killed primary's" if group == "killed" else "the other primaries'",
            "every answer normal" if not counts else
            "%s of %d requests sent from %.2f s to %.2f s" % (dict(counts), sent, first, last)))
    # The lost connection is logged once, naming the node.
    assert "session_redis %s: " % victim.address() in n.log(), n.log()


def test_cluster_configuration(tmp_path):
    ok = harness.nginx_t_conf(redis="session_redis cluster://u:pw@127.0.0.1:7000,127.0.0.1:7001 "
                                    "timeout=1s;")
    code, out = nginx_test_config(ok.replace("@TMP@", str(tmp_path)), str(tmp_path))
    assert code == 0, out
    assert "pw" not in out
    bad = harness.nginx_t_conf(redis="session_redis cluster://127.0.0.1:7000 db=1;")
    code, out = nginx_test_config(bad.replace("@TMP@", str(tmp_path)), str(tmp_path))
    assert code != 0, out
    assert '"db=" in "session_redis" directive is refused with cluster://' in out, out


from test_valgrind import VALGRIND, vg_nginx  # noqa: E402,F401 - the fixture, under valgrind


@pytest.mark.skipif(not os.path.exists(VALGRIND), reason="valgrind is not installed")
def test_redirections_under_valgrind(vg_nginx, own_cluster, upstream):  # noqa: F811
    # Memory errors or leaks in the slot map, the per-node links, MOVED,
    # ASK, the second read and the touch fail the test (the fixture reads
    # valgrind's logs).
    cl = own_cluster()
    c = cl.client()
    sids = ["vg_%d" % i for i in range(3000)]
    pipe = c.pipeline()
    for sid in sids:
        seed_session(pipe, sid, "user_vg")  # version 1: the user hash is read too
    pipe.execute()
    seed_user(c, "user_vg", role="admin")
    n = vg_nginx(http="session_redis %s timeout=5s connect_timeout=5s;" % cl.seed_url(),
                 server=app_location("/app/", "session_cache off; session_touch 60s;")
                 + METRICS_LOCATION)
    wait_until(lambda: n.get("/app/", headers=cookie(sids[0]), timeout=60).status == 200, 60,
               what="a check to pass")
    src, dst = cl.primaries()[:2]
    moved = set(cl.reshard(src, dst, 100))
    in_moved = [sid for sid in sids if slot("sess:" + sid) in moved]
    assert in_moved
    for sid in in_moved:
        assert n.get("/app/", headers=cookie(sid), timeout=60).status == 200, sid
    sid = sids[1]
    s = slot("sess:" + sid)
    owner = cl.slot_owner("sess:" + sid)
    other = next(p for p in cl.primaries() if p is not owner)
    cl.begin_migration(s, owner, other)
    cl.migrate_keys(s, owner, other, keys=["sess:" + sid])
    assert n.get("/app/", headers=cookie(sid), timeout=60).status == 200
    cl.migrate_keys(s, owner, other)
    cl.finish_migration(s, other)
    values = metrics(n)
    assert metric(values, MOVED) > 0 and metric(values, ASK) > 0, values
