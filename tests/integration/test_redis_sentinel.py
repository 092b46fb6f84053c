"""session_redis sentinel://: the module asks the sentinels for the primary,
verifies it with ROLE, follows a failover (+switch-master, or the lost
connection) without a restart of nginx, over plain TCP and TLS, with the
session_redis credentials on the data nodes and on sentinels that ask for
them; an unknown master name and unreachable sentinels are logged clearly.

Real servers only: tests/topology.py's SentinelGroup (a primary, a replica
and three sentinels on ports chosen at run time)."""


import pytest

import harness
import topology
from harness import (Load, METRICS_LOCATION, app_location, cookie, metric, nginx_test_config,
                     parse_metrics, seed_session, seed_user, wait_until)

TIMEOUTS = "timeout=1s connect_timeout=1s"
FAILOVERS = "nginx_session_redis_failovers_total"
PRIMARY_INFO = "nginx_session_redis_primary_info"


def server():
    return app_location("/app/", "session_cache off;") + METRICS_LOCATION


def seeded(group, sid="sess_sentinel", user="user_sentinel"):
    """A session and its user on the primary, replicated before returning."""
    c = group.client()
    seed_session(c, sid, user)
    seed_user(c, user, role="admin")
    # WAIT: the replica has it too, so that a failover keeps the session.
    assert c.execute_command("WAIT", 1, 10000) >= 1
    return sid


def first_pass(n, sid):
    """The first answer: a worker asks the sentinels before it connects, and
    a check that comes meanwhile fails fast (503)."""
    return wait_until(lambda: (lambda r: r if r.status == 200 else None)(
        n.get("/app/", headers=cookie(sid))), 15, what="a check to pass")


def metrics(n):
    resp = n.get("/metrics")
    assert resp.status == 200, resp
    return parse_metrics(resp.body)[0]


def primary_info(values):
    """{address: workers} of nginx_session_redis_primary_info."""
    prefix = '{address="'
    return {labels[len(prefix):-2]: v for (name, labels), v in values.items()
            if name == PRIMARY_INFO}


@pytest.fixture
def group(request, tmp_path):
    """group(**SentinelGroup options): a fresh group, closed after the test."""
    yield from topology.made_per_test(request, tmp_path, topology.SentinelGroup, "group")


@pytest.fixture(scope="module")
def shared_group(request, tmp_path_factory):
    """One group for the tests that do not fail it over."""
    yield from topology.managed(request, topology.SentinelGroup(
        str(tmp_path_factory.mktemp("sentinel"))))


def test_finds_the_primary_and_verifies_it(nginx, shared_group, upstream):
    sid = seeded(shared_group)
    n = nginx(http="session_redis %s %s;" % (shared_group.address_url(), TIMEOUTS),
              server=server(), workers=2)
    resp = first_pass(n, sid)
    assert resp.upstream_header("X-User-Role") == "admin"
    assert n.get("/app/", headers=cookie("sess_none")).status == 401
    # Both workers verified the same primary (ROLE master), and no failover
    # has been seen.
    host, port = shared_group.primary()
    want = "%s:%d" % (host, port)
    values = wait_until(lambda: (lambda v: v if primary_info(v).get(want) == 2 else None)(
        metrics(n)), 10, what="both workers on the primary")
    assert primary_info(values) == {want: 2}
    assert metric(values, FAILOVERS) == 0
    # The lookups went to the primary, not the replica.
    assert shared_group.primary_node().client().info("commandstats").get("cmdstat_hmget")


def test_follows_a_failover_under_load(nginx, group, upstream):
    g = group()
    sid = seeded(g)
    n = nginx(http="session_redis %s %s;" % (g.address_url(), TIMEOUTS), server=server(),
              workers=2)
    first_pass(n, sid)
    old = g.primary()

    load = Load(n, sid)
    wait_until(lambda: len(load.results) >= 20, 30, what="requests before the failover")
    killed = len(load.results)
    g.kill_primary()
    new = g.wait_failover(old=old, timeout=60)
    # Hang guard only: the module follows the new primary without a restart.
    wait_until(lambda: load.results[-1].status == 200 and len(load.results) > killed, 60,
               what="requests to pass again after the failover")
    done = len(load.results)
    wait_until(lambda: len(load.results) >= done + 50, 60, what="requests after the failover")
    results = load.stop()

    statuses = [r.status for r in results]
    assert set(statuses) <= {200, 503}, set(statuses)
    failed = statuses.count(503)
    failures = [r.started for r in results if r.status != 200]
    print("\nsentinel failover: %d of %d requests failed (503) while the primary was "
          "replaced, over %.2f s" % (failed, len(statuses),
                                     failures[-1] - failures[0] if failures else 0))
    # A sane bound, not a timing: everything after the recovery passed, and
    # the failures are a stretch around the failover, not most of the run.
    assert all(s == 200 for s in statuses[done:]), statuses[done:]
    assert all(s == 200 for s in statuses[:killed]), statuses[:killed]
    assert failed < len(statuses) - killed

    values = wait_until(lambda: (lambda v: v if metric(v, FAILOVERS) >= 1 and primary_info(v) ==
                                 {"%s:%d" % new: 2} else None)(metrics(n)),
                        30, what="both workers on the new primary, one failover counted")
    assert metric(values, FAILOVERS) == 1, values
    assert "+switch-master: the primary is now %s:%d" % new in n.log()


def test_readonly_reply_is_taken_for_a_failover(nginx, group, upstream):
    # The primary demoted behind the sentinels' back (no +switch-master):
    # reads still work on it, but the touch, a write, gets READONLY, and the
    # link leaves the node and asks the sentinels again.
    g = group()
    sid = seeded(g)
    c = g.client()
    seed_session(c, "sess_ro", "user_sentinel", idle_timeout=600,
                 last_active_at=harness.now_ms() - 120_000)
    assert c.execute_command("WAIT", 1, 10000) >= 1
    n = nginx(http="session_redis %s %s;" % (g.address_url(), TIMEOUTS),
              server=app_location("/app/", "session_cache off; session_touch 60s;")
              + METRICS_LOCATION)
    first_pass(n, sid)
    primary = g.primary_node()
    replica = [d for d in g.data_nodes if d is not primary][0]
    replica.client().execute_command("REPLICAOF", "NO", "ONE")
    primary.client().execute_command("REPLICAOF", replica.host, replica.port)
    assert n.get("/app/", headers=cookie("sess_ro")).status == 200  # a read: answered
    wait_until(lambda: "READONLY: the primary was demoted" in n.log(), 15,
               what="the READONLY reply taken for a failover")


def test_credentials_for_data_nodes_and_sentinels(nginx, group, upstream):
    # requirepass on the data nodes and on the sentinels: the session_redis
    # password serves both (sentinels get AUTH only when they ask: NOAUTH).
    g = group(password="Sent-Pw-1", sentinel_password="Sent-Pw-1")
    sid = seeded(g)
    n = nginx(http="session_redis %s %s;" % (g.address_url(credentials=True), TIMEOUTS),
              server=server())
    first_pass(n, sid)
    assert "Sent-Pw-1" not in n.log()


def test_tls_to_sentinels_and_data_nodes(nginx, group, upstream):
    pki = topology.shared_pki()
    g = group(pki=pki)
    sid = seeded(g)
    n = nginx(http="session_redis %s tls ca=%s %s;" % (g.address_url(), pki.ca_cert, TIMEOUTS),
              server=server())
    first_pass(n, sid)
    values = metrics(n)
    assert metric(values, "nginx_session_redis_tls_handshake_failures_total") == 0


def test_unknown_master_name_is_logged(nginx, shared_group, upstream):
    url = shared_group.address_url().rsplit("/", 1)[0] + "/nosuchmaster"
    n = nginx(http="session_redis %s %s;" % (url, TIMEOUTS), server=server())
    assert n.get("/app/", headers=cookie("sess_x")).status == 503
    log = wait_until(lambda: (lambda t: t if "no sentinel named the primary" in t else None)(
        n.log()), 15, what="the failure in the log")
    assert 'does not monitor a primary named "nosuchmaster"' in log, log
    assert 'no sentinel named the primary of "nosuchmaster"' in log, log


def test_unreachable_sentinels_are_logged(nginx, upstream):
    ports = [topology.listen_port() for _ in range(2)]
    url = "sentinel://%s/mymaster" % ",".join("127.0.0.1:%d" % p for p in ports)
    n = nginx(http="session_redis %s %s;" % (url, TIMEOUTS), server=server())
    assert n.get("/app/", headers=cookie("sess_x")).status == 503
    log = wait_until(lambda: (lambda t: t if "no sentinel named the primary" in t else None)(
        n.log()), 15, what="the failure in the log")
    for p in ports:
        assert "sentinel 127.0.0.1:%d: connect failed" % p in log, log


def test_sentinel_configuration(tmp_path):
    ca = topology.shared_pki().ca_cert
    ok = harness.nginx_t_conf(redis="session_redis sentinel://u:pw@127.0.0.1:26379,127.0.0.1/"
                                    "mymaster/2 tls ca=%s;" % ca)
    code, out = nginx_test_config(ok.replace("@TMP@", str(tmp_path)), str(tmp_path))
    assert code == 0, out
    assert "pw" not in out


from test_valgrind import vg_nginx  # noqa: E402,F401 - the fixture, under valgrind


def test_failover_under_valgrind(vg_nginx, group, upstream):  # noqa: F811
    # Memory errors or leaks in discovery, the watch, the switch and the
    # handshake's ROLE fail the test (the fixture reads valgrind's logs).
    g = group()
    sid = seeded(g)
    n = vg_nginx(http="session_redis %s timeout=5s connect_timeout=5s;" % g.address_url(),
                 server=app_location("/app/", "session_cache off; session_touch 60s;")
                 + METRICS_LOCATION)
    wait_until(lambda: n.get("/app/", headers=cookie(sid), timeout=60).status == 200, 60,
               what="a check to pass")
    old = g.primary()
    g.kill_primary()
    new = g.wait_failover(old=old, timeout=60)
    wait_until(lambda: "+switch-master: the primary is now %s:%d" % new in n.log(), 60,
               what="the switch in the log")
    wait_until(lambda: n.get("/app/", headers=cookie(sid), timeout=60).status == 200, 60,
               what="a check to pass on the new primary")
