"""syncd to Redis over TLS (issue 8): a real redis-server with a test CA
(tests/topology.py), server-verified and mutual TLS, a wrong CA and a wrong
server name refused with a clear log line while /healthz and /metrics say
Redis is unreachable, and an ACL user with the right and the wrong password.
Each case starts its own syncd (and server) against the module's
PostgreSQL, with its own key prefix."""

import json
import os
import sys
import types

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import topology  # noqa: E402
from syncd_harness import Syncd, new_id, now_ms, user_data, wait_for  # noqa: E402

PASSWORD = "tls-Acl-pw-7Qx2"


@pytest.fixture(scope="module")
def pki():
    return topology.shared_pki()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture(scope="module")
def tls_redis(request, workdir, pki):
    """TLS only, server certificate for 127.0.0.1/localhost/redis.test, an
    ACL user `syncd` and the default user disabled (as managed services)."""
    node = topology.TlsRedisServer(workdir, pki, users={"syncd": PASSWORD},
                                   disable_default_user=True, name="tls")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def mtls_redis(workdir, pki):
    node = topology.TlsRedisServer(workdir, pki, mutual_tls=True, name="mtls")
    yield node
    node.stop()


def run_syncd(pg, url, prefix, **env):
    daemon = Syncd(pg, types.SimpleNamespace(url=url), prefix=prefix,
                   extra_env={k: v for k, v in env.items() if v is not None})
    return daemon.start()


def stop(daemon):
    code = daemon.stop()
    log = daemon.read_log()
    assert PASSWORD not in log
    assert code == 0, log
    return log


def deliver_user(daemon):
    uid = new_id("user")
    status, _, _ = daemon.deliver("user.created", user_data(uid, now_ms(), email=uid + "@x.test"))
    assert status == 200
    return uid


def projected(client, key, uid):
    return wait_for(lambda: client.hget(key, "email") == uid + "@x.test", timeout=15,
                    what=f"{key} in Redis")


def unreachable(daemon):
    """/healthz degraded for Redis and syncd_redis_up 0."""
    status, body = daemon.request("GET", "/healthz")
    health = json.loads(body)
    if not (status == 200 and health["status"] == "degraded" and "redis" in health["reason"]):
        return False
    _, metrics = daemon.request("GET", "/metrics")
    return "syncd_redis_up 0" in metrics.splitlines()


def tls_failures(daemon):
    _, metrics = daemon.request("GET", "/metrics")
    for line in metrics.splitlines():
        if line.startswith("syncd_redis_tls_handshake_failures_total "):
            return int(line.split()[1])
    raise AssertionError("no syncd_redis_tls_handshake_failures_total in " + metrics)


def test_server_verified_tls_with_acl_user(pg, tls_redis, pki):
    url = f"rediss://syncd:{PASSWORD}@127.0.0.1:{tls_redis.port}/0"
    daemon = run_syncd(pg, url, "tls1:", SYNCD_REDIS_CA_FILE=pki.ca_cert)
    try:
        uid = deliver_user(daemon)
        with tls_redis.client() as c:
            projected(c, f"tls1:user:{uid}", uid)
        # check-config shows the TLS settings, never the password.
        out = daemon.run("check-config").stdout
        assert f"rediss://syncd@127.0.0.1:{tls_redis.port}/0" in out
        assert pki.ca_cert in out and "certificate verified" in out
        assert PASSWORD not in out
        assert tls_failures(daemon) == 0
    finally:
        log = stop(daemon)
    assert f"Redis reachable at rediss://syncd@127.0.0.1:{tls_redis.port}/0" in log


def test_server_name_is_verified(pg, tls_redis, pki):
    url = f"rediss://syncd:{PASSWORD}@127.0.0.1:{tls_redis.port}"
    # The certificate names redis.test: accepted under that name...
    daemon = run_syncd(pg, url, "tls2:", SYNCD_REDIS_CA_FILE=pki.ca_cert,
                       SYNCD_REDIS_SERVER_NAME="redis.test")
    try:
        uid = deliver_user(daemon)
        with tls_redis.client() as c:
            projected(c, f"tls2:user:{uid}", uid)
    finally:
        stop(daemon)
    # ...refused under another.
    daemon = run_syncd(pg, url, "tls3:", SYNCD_REDIS_CA_FILE=pki.ca_cert,
                       SYNCD_REDIS_SERVER_NAME="other.example")
    try:
        deliver_user(daemon)
        wait_for(lambda: unreachable(daemon), timeout=15, what="Redis reported unreachable")
    finally:
        log = stop(daemon)
    assert ("TLS certificate verification failed: hostname mismatch") in log, log


def test_wrong_ca_is_refused_and_reported(pg, tls_redis, pki):
    url = f"rediss://syncd:{PASSWORD}@127.0.0.1:{tls_redis.port}"
    daemon = run_syncd(pg, url, "tls4:", SYNCD_REDIS_CA_FILE=pki.other_ca_cert)
    try:
        uid = deliver_user(daemon)  # committed: it waits in the outbox
        wait_for(lambda: unreachable(daemon), timeout=15, what="Redis reported unreachable")
        assert pg.scalar("SELECT count(*) FROM outbox WHERE key = :'p1'", uid) == "1"
        with tls_redis.client() as c:
            assert not c.exists(f"tls4:user:{uid}")
        assert tls_failures(daemon) >= 1
    finally:
        log = stop(daemon)
    # OpenSSL's words (X509_verify_cert_error_string) for a chain that ends
    # in a CA we were not given: which one depends on what the server sends.
    line = f"Redis at 127.0.0.1:{tls_redis.port}: TLS certificate verification failed: "
    assert any(line + why in log for why in ("self-signed certificate in certificate chain",
                                             "unable to get local issuer certificate")), log
    # Left for the next syncd on this database, which must not trip on it.
    pg.query("DELETE FROM outbox")


def test_acl_user_wrong_password(pg, tls_redis, pki):
    wrong = "not-the-" + PASSWORD[::-1]
    url = f"rediss://syncd:{wrong}@127.0.0.1:{tls_redis.port}"
    daemon = run_syncd(pg, url, "tls5:", SYNCD_REDIS_CA_FILE=pki.ca_cert)
    try:
        deliver_user(daemon)
        wait_for(lambda: unreachable(daemon), timeout=15, what="Redis reported unreachable")
    finally:
        log = stop(daemon)
    assert (f"Redis at 127.0.0.1:{tls_redis.port} refused the credentials of user syncd: "
            "WRONGPASS") in log, log
    assert wrong not in log
    pg.query("DELETE FROM outbox")


def test_mutual_tls(pg, mtls_redis, pki):
    url = f"rediss://127.0.0.1:{mtls_redis.port}"
    daemon = run_syncd(pg, url, "tls6:", SYNCD_REDIS_CA_FILE=pki.ca_cert,
                       SYNCD_REDIS_CERT_FILE=pki.client_cert, SYNCD_REDIS_KEY_FILE=pki.client_key)
    try:
        uid = deliver_user(daemon)
        with mtls_redis.client() as c:
            projected(c, f"tls6:user:{uid}", uid)
        out = daemon.run("check-config").stdout
        assert "client certificate " + pki.client_cert in out
    finally:
        stop(daemon)


def test_mutual_tls_without_client_certificate(pg, mtls_redis, pki):
    url = f"rediss://127.0.0.1:{mtls_redis.port}"
    daemon = run_syncd(pg, url, "tls7:", SYNCD_REDIS_CA_FILE=pki.ca_cert)
    try:
        deliver_user(daemon)
        wait_for(lambda: unreachable(daemon), timeout=15, what="Redis reported unreachable")
        assert tls_failures(daemon) >= 1  # the refusal of the client counts too
    finally:
        log = stop(daemon)
    # TLS 1.3: the server's refusal arrives after the client's handshake,
    # as an alert on the first read.
    assert f"Redis at 127.0.0.1:{mtls_redis.port}: " in log
    assert "certificate required" in log, log
    pg.query("DELETE FROM outbox")


def test_config_errors_name_the_keys(pg, pki):
    daemon = Syncd(pg, types.SimpleNamespace(url="rediss://127.0.0.1:1"),
                   extra_env={"SYNCD_REDIS_CERT_FILE": pki.client_cert})
    out = daemon.run("check-config", check=False)
    assert out.returncode == 78
    assert "SYNCD_REDIS_CERT_FILE, SYNCD_REDIS_KEY_FILE" in out.stderr
    daemon.env["SYNCD_REDIS_URL"] = "cluster://127.0.0.1:7000,127.0.0.1:7001/1"
    del daemon.env["SYNCD_REDIS_CERT_FILE"]
    out = daemon.run("check-config", check=False)
    assert out.returncode == 78
    assert "SYNCD_REDIS_URL: " in out.stderr, out.stderr
