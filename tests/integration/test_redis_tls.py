"""session_redis over TLS and with ACL users, against a real redis-server
with TLS (tests/topology.py's test PKI): server-verified TLS, mutual TLS, a
wrong CA, a name that does not match, ACL users with the right and the
wrong password, the `nginx -t` errors of the TLS and address options, and a
host name followed through http{}'s resolver."""

import os
import socket
import struct
import subprocess
import sys
import threading

import pytest
import redis as redis_py

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import harness  # noqa: E402
import topology  # noqa: E402
from harness import (METRICS_LOCATION, app_location, cookie, metric, nginx_t_conf,  # noqa: E402
                     nginx_test_config, parse_metrics, seed_session, seed_user, wait_until)

TIMEOUTS = "timeout=1s connect_timeout=1s"
TLS_FAILURES = "nginx_session_redis_tls_handshake_failures_total"


@pytest.fixture(scope="module")
def pki():
    return topology.shared_pki()


@pytest.fixture
def tls_redis(tmp_path, pki):
    """tls_redis(**RedisNode options) starts a TLS-only redis-server,
    stopped after the test."""
    nodes = []

    def make(**kw):
        node = topology.TlsRedisServer(str(tmp_path), pki, **kw)
        nodes.append(node)
        return node
    yield make
    for node in nodes:
        node.stop()


def seeded(node, sid="sess_tls", user="user_tls", role="admin"):
    c = node.client()
    seed_session(c, sid, user)
    seed_user(c, user, role=role)
    return sid


def tls_failures(n):
    values, _ = parse_metrics(n.get("/metrics").body)
    return metric(values, TLS_FAILURES)


def server(directives=""):
    return app_location("/app/", directives) + METRICS_LOCATION


def test_server_verified_tls(nginx, tls_redis, pki):
    node = tls_redis()
    sid = seeded(node)
    n = nginx(http="session_redis rediss://%s ca=%s %s;" % (node.address(), pki.ca_cert, TIMEOUTS),
              server=server())
    resp = n.get("/app/", headers=cookie(sid))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Role") == "admin"
    assert n.get("/app/", headers=cookie("sess_none")).status == 401
    assert tls_failures(n) == 0
    # The module's connection is a TLS one (redis-server has no plain port).
    clients = node.client().client_list()
    assert any(c.get("cmd") in ("hmget", "evalsha", "script") or c.get("name") == ""
               for c in clients)


def test_tls_option_on_short_address_and_server_name(nginx, tls_redis, pki):
    # `tls` on host:port, and the name checked against the certificate's DNS
    # names rather than its IP.
    node = tls_redis()
    sid = seeded(node)
    n = nginx(http="session_redis %s tls ca=%s server_name=redis.test %s;"
                   % (node.address(), pki.ca_cert, TIMEOUTS),
              server=server())
    assert n.get("/app/", headers=cookie(sid)).status == 200


def test_server_name_mismatch_is_refused(nginx, tls_redis, pki):
    node = tls_redis()
    sid = seeded(node)
    n = nginx(http="session_redis rediss://%s ca=%s server_name=other.test %s;"
                   % (node.address(), pki.ca_cert, TIMEOUTS),
              server=server())
    assert n.get("/app/", headers=cookie(sid)).status == 503
    wait_until(lambda: "does not match \"other.test\"" in n.log(), 10,
               what="the name mismatch in the log")
    assert tls_failures(n) >= 1


def test_wrong_ca_is_refused_with_a_clear_log_line(nginx, tls_redis, pki):
    node = tls_redis()
    sid = seeded(node)
    n = nginx(http="session_redis rediss://%s ca=%s %s;"
                   % (node.address(), pki.other_ca_cert, TIMEOUTS),
              server=server())
    assert n.get("/app/", headers=cookie(sid)).status == 503
    line = wait_until(lambda: [l for l in n.log().splitlines()
                               if "certificate could not be verified" in l], 10,
                      what="the verification failure in the log")[0]
    # Why (X509_verify_cert_error_string) and where.
    assert any(why in line for why in ("unable to get local issuer certificate",
                                       "self-signed certificate in certificate chain")), line
    assert node.address() in line, line
    assert "[error]" in line, line
    assert tls_failures(n) >= 1


def test_tls_verify_off_accepts_an_unknown_ca(nginx, tls_redis, pki):
    node = tls_redis()
    sid = seeded(node)
    n = nginx(http="session_redis rediss://%s ca=%s tls_verify=off %s;"
                   % (node.address(), pki.other_ca_cert, TIMEOUTS),
              server=server())
    assert n.get("/app/", headers=cookie(sid)).status == 200
    assert "tls_verify=off" in n.log()


def test_mutual_tls(nginx, tls_redis, pki):
    node = tls_redis(mutual_tls=True)
    sid = seeded(node)
    n = nginx(http="session_redis rediss://%s ca=%s cert=%s key=%s %s;"
                   % (node.address(), pki.ca_cert, pki.client_cert, pki.client_key, TIMEOUTS),
              server=server())
    assert n.get("/app/", headers=cookie(sid)).status == 200
    assert tls_failures(n) == 0


def test_mutual_tls_without_a_client_certificate_fails(nginx, tls_redis, pki):
    node = tls_redis(mutual_tls=True)
    sid = seeded(node)
    n = nginx(http="session_redis rediss://%s ca=%s %s;" % (node.address(), pki.ca_cert, TIMEOUTS),
              server=server("session_fail_mode closed;"))
    assert n.get("/app/", headers=cookie(sid)).status == 503
    wait_until(lambda: "TLS handshake failed" in n.log(), 10, what="the TLS failure in the log")
    assert tls_failures(n) >= 1
    # fail open lets the request through with the fail-mode answer.
    n2 = nginx(http="session_redis rediss://%s ca=%s %s;" % (node.address(), pki.ca_cert, TIMEOUTS),
               server=server("session_fail_mode open;"))
    resp = n2.get("/app/", headers=cookie(sid))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") is None


def test_reconnects_over_tls(nginx, tls_redis, pki):
    # A dropped TLS connection is opened again (and its session resumed).
    node = tls_redis()
    sid = seeded(node)
    n = nginx(http="session_redis rediss://%s ca=%s %s;" % (node.address(), pki.ca_cert, TIMEOUTS),
              server=server())
    assert n.get("/app/", headers=cookie(sid)).status == 200
    admin = node.client()
    me = admin.client_id()
    for c in admin.client_list():
        if int(c["id"]) != me:
            admin.client_kill_filter(_id=c["id"])
    wait_until(lambda: n.get("/app/", headers=cookie(sid)).status == 200, 10,
               what="a check after the reconnect")
    assert tls_failures(n) == 0


def test_acl_user_with_the_right_password(nginx, tls_redis, pki):
    node = tls_redis(users={"app": "acl-Right-pw"}, disable_default_user=True)
    sid = seeded(node)
    # In the URL, and as options.
    n = nginx(http="session_redis rediss://app:acl-Right-pw@%s ca=%s %s;"
                   % (node.address(), pki.ca_cert, TIMEOUTS),
              server=server())
    assert n.get("/app/", headers=cookie(sid)).status == 200
    n2 = nginx(http="session_redis rediss://%s user=app password=acl-Right-pw ca=%s %s;"
                    % (node.address(), pki.ca_cert, TIMEOUTS),
               server=server())
    assert n2.get("/app/", headers=cookie(sid)).status == 200
    for x in (n, n2):
        assert "acl-Right-pw" not in x.log()


def test_acl_user_with_the_wrong_password(nginx, tls_redis, pki):
    node = tls_redis(users={"app": "acl-Right-pw"}, disable_default_user=True)
    sid = seeded(node)
    n = nginx(http="session_redis rediss://app:Wrong-Secret-9@%s ca=%s %s;"
                   % (node.address(), pki.ca_cert, TIMEOUTS),
              server=server())
    assert n.get("/app/", headers=cookie(sid)).status == 503
    line = wait_until(lambda: [l for l in n.log().splitlines() if "AUTH failed" in l], 10,
                      what="the AUTH failure in the log")[0]
    assert "WRONGPASS" in line, line
    assert "Wrong-Secret-9" not in n.log()
    assert "acl-Right-pw" not in n.log()


def test_acl_user_over_plain_tcp(nginx, redis_factory):
    # AUTH user password does not need TLS.
    srv = redis_factory()
    srv.client().execute_command("ACL", "SETUSER", "plain", "on", ">plain-pw", "~*", "+@all")
    seed_session(srv.client(), "sess_plain_acl", "user_pa")
    n = nginx(http="session_redis redis://plain:plain-pw@%s/0 %s;" % (srv.address(), TIMEOUTS),
              server=server())
    assert n.get("/app/", headers=cookie("sess_plain_acl")).status == 200
    assert "plain-pw" not in n.log()


@pytest.mark.parametrize("redis,needles", [
    ("session_redis 127.0.0.1:6379 ca=@CA@;", ['"ca="', "needs TLS"]),
    ("session_redis redis://127.0.0.1:6379 server_name=x;", ['"server_name="', "needs TLS"]),
    ("session_redis rediss://127.0.0.1:6379 cert=@CERT@;", ['"cert=" and "key="']),
    ("session_redis rediss://127.0.0.1:6379 key=@KEY@;", ['"cert=" and "key="']),
    ("session_redis rediss://127.0.0.1:6379 ca=/nonexistent/ca.pem;", ['"ca="']),
    ("session_redis rediss://127.0.0.1:6379 cert=/nonexistent/c.pem key=/nonexistent/k.pem;",
     ['"cert="']),
    ("session_redis rediss://127.0.0.1:6379 tls_verify=maybe;", ['"tls_verify="']),
    ("session_redis rediss://127.0.0.1:6379 ca=;", ['"ca="']),
    ("session_redis unix:/tmp/r.sock tls;", ["unix socket"]),
    ("session_redis 127.0.0.1:6379 user=app;", ['"user="', "password"]),
    ("session_redis cluster://127.0.0.1:7000,127.0.0.1:7001 db=1;",
     ['"db=" in "session_redis" directive is refused with cluster://']),
    ("session_redis redis://u:TopSecret1@127.0.0.1:99999;", ["invalid address"]),
    ("session_redis redis://u:TopSecret1@127.0.0.1:6379/0 db=2;", ['"db=2"']),
    ("session_redis redis://:TopSecret1@127.0.0.1:6379 password=other;", ['"password="']),
], ids=["ca-without-tls", "server-name-without-tls", "cert-without-key", "key-without-cert",
        "ca-missing-file", "cert-missing-file", "tls-verify-bogus", "ca-empty", "tls-over-unix",
        "user-without-password", "cluster", "url-secret-not-echoed", "db-twice",
        "password-twice"])
def test_bad_tls_and_address_options_fail_nginx_t(tmp_path, pki, redis, needles):
    redis = (redis.replace("@CA@", pki.ca_cert).replace("@CERT@", pki.client_cert)
             .replace("@KEY@", pki.client_key))
    rc, out = nginx_test_config(nginx_t_conf(redis=redis).replace("@TMP@", str(tmp_path)),
                                str(tmp_path))
    assert rc != 0, out
    emerg = [l for l in out.splitlines() if "[emerg]" in l]
    assert emerg, out
    assert "session_redis" in emerg[-1], out
    for needle in needles:
        assert needle in emerg[-1], out
    assert "TopSecret1" not in out


def test_good_tls_options_pass_nginx_t(tmp_path, pki):
    redis = ("session_redis rediss://app:pw@localhost:6380/2 ca=%s cert=%s key=%s "
             "server_name=redis.test timeout=100ms;" % (pki.ca_cert, pki.client_cert,
                                                        pki.client_key))
    rc, out = nginx_test_config(nginx_t_conf(redis=redis).replace("@TMP@", str(tmp_path)),
                                str(tmp_path))
    assert rc == 0, out
    rc, out = nginx_test_config(
        nginx_t_conf(redis="session_redis rediss://127.0.0.1:6380;").replace("@TMP@",
                                                                           str(tmp_path)),
        str(tmp_path))
    assert rc == 0, out  # the system's CAs


# --------------------------------------------------------------------------
# A host name followed through http{}'s resolver


class FakeDns:
    """A UDP DNS server answering A queries for every name with `self.ip`
    (TTL 0), and AAAA queries with no records: enough for nginx's resolver.
    A test fixture, like harness.FakeRedis."""

    def __init__(self, ip):
        self.ip = ip
        self.queries = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            try:
                data, peer = self._sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(data) < 12:
                continue
            # The question: labels up to a zero byte, then QTYPE and QCLASS.
            i, labels = 12, []
            while i < len(data) and data[i] != 0:
                labels.append(data[i + 1:i + 1 + data[i]].decode("ascii", "replace"))
                i += 1 + data[i]
            question = data[12:i + 5]
            qtype = struct.unpack("!H", data[i + 1:i + 3])[0]
            self.queries.append((".".join(labels), qtype))
            answers = b""
            if qtype == 1:  # A
                answers = (struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4)
                           + socket.inet_aton(self.ip))
            header = struct.pack("!HHHHHH", struct.unpack("!H", data[:2])[0], 0x8180, 1,
                                 1 if answers else 0, 0, 0)
            self._sock.sendto(header + question + answers, peer)

    def close(self):
        self._stop = True
        self._thread.join(2)
        self._sock.close()


def test_host_name_is_resolved_again_before_a_reconnect(nginx, tmp_path, redis_factory):
    # Two servers on the same port, at 127.0.0.1 and 127.0.0.2; the name
    # "localhost" first means the one (configuration load), then, through
    # http{}'s resolver, the other: after a failover the module follows it.
    first = redis_factory()
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = subprocess.Popen([harness.REDIS_BIN, "--port", str(first.port), "--bind", "127.0.0.2",
                               "--save", "", "--appendonly", "no", "--dir", str(second_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dns = FakeDns("127.0.0.1")
    try:
        second_client = redis_py.Redis(host="127.0.0.2", port=first.port, decode_responses=True,
                                       socket_timeout=10)
        wait_until(second_client.ping, 10, what="the second redis-server")
        seed_session(first.client(), "sess_first", "user_first")
        seed_session(second_client, "sess_second", "user_second")
        n = nginx(http="resolver 127.0.0.1:%d ipv6=off valid=1s;\n"
                       "    session_redis localhost:%d %s;" % (dns.port, first.port, TIMEOUTS),
                  server=server())
        assert n.get("/app/", headers=cookie("sess_first")).status == 200
        assert n.get("/app/", headers=cookie("sess_second")).status == 401
        dns.ip = "127.0.0.2"
        first.stop()
        wait_until(lambda: n.get("/app/", headers=cookie("sess_second")).status == 200, 15,
                   what="the module on the name's new address")
        assert ("localhost", 1) in dns.queries
    finally:
        dns.close()
        second.terminate()
        second.wait(10)


def test_unresolvable_name_keeps_the_last_address(nginx, redis_factory):
    # The resolver answers nothing useful: the address from configuration
    # load stays in use.
    srv = redis_factory()
    dns = FakeDns("127.0.0.1")
    dns.ip = "0.0.0.0"
    dns.close()  # nobody answers: the resolver times out
    seed_session(srv.client(), "sess_keep", "user_keep")
    n = nginx(http="resolver 127.0.0.1:%d ipv6=off; resolver_timeout 1s;\n"
                   "    session_redis localhost:%d %s;" % (dns.port, srv.port, TIMEOUTS),
              server=server())
    assert n.get("/app/", headers=cookie("sess_keep")).status == 200
    srv.restart()
    seed_session(srv.client(), "sess_keep", "user_keep")  # no persistence
    wait_until(lambda: n.get("/app/", headers=cookie("sess_keep")).status == 200, 15,
               what="a check after the restart")
    wait_until(lambda: "cannot resolve" in n.log(), 10, what="the resolution failure in the log")
