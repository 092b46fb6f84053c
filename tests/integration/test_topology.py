"""Self-tests of tests/topology.py, with redis-py only (no nginx, no module):
TLS with the test CA (server-verified, mutual, wrong CA), ACL users, a
Sentinel failover, and a Redis Cluster resharded (MOVED) and held
half-migrated (ASK)."""

import socket
import ssl

import pytest
import redis as redis_py
import redis.crc

import topology
from harness import wait_until

pytestmark = pytest.mark.no_module


@pytest.fixture(scope="module")
def pki():
    return topology.shared_pki()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("topology"))


@pytest.fixture(scope="module")
def tls_server(workdir, pki):
    node = topology.TlsRedisServer(workdir, pki)
    yield node
    node.stop()


@pytest.fixture(scope="module")
def mtls_server(workdir, pki):
    node = topology.TlsRedisServer(workdir, pki, mutual_tls=True,
                                   users={"app": "s3cret", "reader": "r3ad"},
                                   disable_default_user=True)
    yield node
    node.stop()


# --------------------------------------------------------------------------
# PKI and TLS


def _handshake(port, pki, server_hostname):
    ctx = ssl.create_default_context(cafile=pki.ca_cert)  # verifies chain and name
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.getpeercert()


def test_server_certificate_names(tls_server, pki):
    for name in ("redis.test", "localhost", "127.0.0.1"):
        _handshake(tls_server.port, pki, name)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls_server.port, pki, "other.test")


def test_tls_ping_server_verified(tls_server, pki):
    assert tls_server.client().ping()
    assert tls_server.url().startswith("rediss://127.0.0.1:")
    assert tls_server.cli("PING").strip() == "PONG"
    # A client certificate is accepted, not required.
    assert tls_server.client(cert=pki.client_cert, key=pki.client_key).ping()


def test_tls_wrong_ca_refused(tls_server, pki):
    with pytest.raises(redis_py.ConnectionError):
        tls_server.client(ca=pki.other_ca_cert).ping()


def test_tls_port_does_not_speak_plaintext(tls_server):
    plain = redis_py.Redis(host="127.0.0.1", port=tls_server.port, socket_timeout=3)
    with pytest.raises((redis_py.ConnectionError, redis_py.TimeoutError)):
        plain.ping()


def test_mutual_tls_needs_a_client_certificate_from_the_ca(mtls_server, pki):
    assert mtls_server.client().ping()  # the test client certificate by default
    with pytest.raises(redis_py.ConnectionError):
        mtls_server.client(cert=False).ping()
    with pytest.raises(redis_py.ConnectionError):
        mtls_server.client(cert=pki.other_client_cert, key=pki.other_client_key).ping()


def test_acl_user_right_and_wrong_password(mtls_server):
    assert mtls_server.client(username="reader", password="r3ad").ping()
    assert mtls_server.client().acl_whoami() == "app"
    with pytest.raises(redis_py.ResponseError, match="WRONGPASS"):
        mtls_server.client(username="app", password="wrong").ping()
    # The default user is off: a client without credentials gets nothing.
    with pytest.raises(redis_py.AuthenticationError):
        mtls_server.client(username="", password=None).ping()
    assert mtls_server.url() == "rediss://app:s3cret@%s" % mtls_server.address()
    assert mtls_server.cli("ACL", "WHOAMI").strip() == "app"


def test_plain_server_with_requirepass(workdir):
    node = topology.RedisNode(workdir, password="pw d\"q")  # quoted in redis.conf
    try:
        assert node.client().ping()
        with pytest.raises(redis_py.ResponseError, match="WRONGPASS|invalid"):
            node.client(password="nope").ping()
        assert node.url() == "redis://:pw%20d%22q@" + node.address()
    finally:
        node.stop()
    assert node.proc is None


# --------------------------------------------------------------------------
# Sentinel


def _check_failover(group, how):
    old = group.primary()
    assert group.node_at(old).role() == "master"
    c = group.client()
    c.set("before_failover", "kept")
    assert c.wait(1, 10000) == 1  # on the replica before the primary goes
    failed = group.kill_primary(how)
    new = group.wait_failover(old, timeout=30)
    assert new != old
    assert group.primary() == new
    assert group.node_at(new).role() == "master"
    assert group.client().get("before_failover") == "kept"
    return failed


def test_sentinel_failover_with_acl_user(workdir):
    # The with block stops every process, and prints their logs on failure.
    with topology.SentinelGroup(workdir, user=("app", "pw1")) as group:
        assert group.address_url() == "sentinel://%s/mymaster" % ",".join(
            group.sentinel_addresses())
        assert group.address_url(credentials=True, db=2).startswith("sentinel://app:pw1@")
        assert len(set(group.sentinel_addresses())) == 3
        with pytest.raises(redis_py.AuthenticationError):
            group.primary_node().client(username="", password=None).ping()
        failed = _check_failover(group, "kill")
        assert not failed.alive()
    assert all(n.proc is None for n in group.all_nodes)


def test_sentinel_failover_over_mutual_tls(workdir, pki):
    with topology.SentinelGroup(workdir, pki=pki, mutual_tls=True, password="dpw",
                                sentinel_password="spw") as group:
        with pytest.raises(redis_py.ConnectionError):
            group.sentinels[0].client(cert=False).ping()
        failed = _check_failover(group, "stop")
        assert failed.proc.poll() is None and not failed.alive()  # frozen, not gone


# --------------------------------------------------------------------------
# Cluster


@pytest.fixture(scope="module")
def cluster(request, workdir):
    yield from topology.managed(request, topology.RedisCluster(workdir, replicas=True))


def test_cluster_keys_spread_over_three_primaries(cluster):
    primaries = cluster.primaries()
    assert len(primaries) == 3 and len(cluster.replicas()) == 3
    assert cluster.seed_url() == "cluster://" + ",".join(p.address() for p in primaries)
    c = cluster.client()
    pipe = c.pipeline()
    for i in range(300):
        pipe.set("spread:%d" % i, i)
    pipe.execute()
    assert all(p.client().dbsize() > 0 for p in primaries)
    for key in ("spread:1", "spread:77", "spread:299"):
        owner = cluster.slot_owner(key)
        assert cluster.keyslot(key) == redis.crc.key_slot(key.encode())
        assert owner.client().get(key) == key.split(":")[1]


def test_cluster_reshard_moves_slots_and_raw_client_sees_moved(cluster):
    c = cluster.client()
    pipe = c.pipeline()
    for i in range(2000):
        pipe.set("reshard:%d" % i, i)
    pipe.execute()
    src, dst = cluster.primaries()[:2]
    before = len(cluster.slots_of(src))
    moved = cluster.reshard(src, dst, 100)
    assert len(moved) == 100 and len(cluster.slots_of(src)) == before - 100
    key = next("reshard:%d" % i for i in range(2000)
               if redis.crc.key_slot(b"reshard:%d" % i) in moved)
    assert cluster.slot_owner(key) is dst
    with pytest.raises(redis_py.ResponseError,
                       match=r"^MOVED %d %s$" % (cluster.keyslot(key), dst.address())):
        src.client().get(key)
    assert dst.client().get(key) == key.split(":")[1]  # the key moved with its slot
    assert cluster.client().get(key) == key.split(":")[1]


def test_cluster_slot_held_in_ask_state(cluster):
    moved_key, staying_key = "{ask}moved", "{ask}staying"
    src = cluster.slot_owner(moved_key)
    dst = next(p for p in cluster.primaries() if p is not src)
    slot = cluster.keyslot(moved_key)
    c = cluster.client()
    c.set(moved_key, "m")
    c.set(staying_key, "s")
    cluster.begin_migration(slot, src, dst)
    assert cluster.migrate_keys(slot, src, dst, keys=[moved_key]) == [moved_key]
    with pytest.raises(redis_py.ResponseError, match=r"^ASK %d %s$" % (slot, dst.address())):
        src.client().get(moved_key)
    assert src.client().get(staying_key) == "s"  # still served by the source
    one = dst.client(single_connection_client=True)
    with pytest.raises(redis_py.ResponseError, match=r"^MOVED %d" % slot):
        one.get(moved_key)  # the target serves it only after ASKING
    one.execute_command("ASKING")
    assert one.get(moved_key) == "m"
    assert cluster.client().get(moved_key) == "m"  # redis-py follows the ASK
    cluster.migrate_keys(slot, src, dst)
    cluster.finish_migration(slot, dst)
    assert cluster.slot_owner(moved_key) is dst
    assert dst.client().get(staying_key) == "s"


def test_cluster_kill_primary_promotes_its_replica(cluster):
    key = "failover:key"
    owner = cluster.slot_owner(key)
    c = cluster.client()
    c.set(key, "kept")
    assert owner.client().wait(1, 10000) == 1
    # WAIT 1 is one replica; whichever replica wins the election must hold
    # the key, so wait for it on every replica of this primary (a replica
    # still in its first sync would be promoted empty otherwise).
    mine = [n for n in cluster.replicas()
            if int(n.client().info("replication").get("master_port", 0)) == owner.port]
    assert mine, "the primary has a replica"

    def every_replica_has_it():
        for replica in mine:
            client = replica.client(single_connection_client=True)
            client.execute_command("READONLY")
            if client.get(key) != "kept":
                return False
        return True
    wait_until(every_replica_has_it, 30, what="the key on every replica of its primary")
    assert cluster.kill_primary(owner) is owner
    cluster.wait_ok(timeout=60)
    new_owner = cluster.slot_owner(key)
    assert new_owner is not owner and new_owner.role() == "master"
    assert new_owner.client().get(key) == "kept"
    assert len(cluster.primaries()) == 3


def test_cluster_over_mutual_tls_with_acl_user(workdir, pki):
    with topology.RedisCluster(workdir, pki=pki, mutual_tls=True, user=("app", "cpw")) as cluster:
        assert cluster.seed_url(credentials=True).startswith("cluster://app:cpw@")
        c = cluster.client()
        for i in range(200):
            c.set("tls:%d" % i, i)
        primaries = cluster.primaries()
        assert all(p.client().dbsize() > 0 for p in primaries)
        with pytest.raises(redis_py.ConnectionError):
            primaries[0].client(cert=False).ping()
        # redis-cli over TLS, MIGRATE over tls-cluster with AUTH2.
        moved = cluster.reshard(primaries[0], primaries[1], 50)
        assert len(moved) == 50
        assert all(c.get("tls:%d" % i) == str(i) for i in range(200))
