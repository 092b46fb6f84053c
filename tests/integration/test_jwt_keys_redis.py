"""`session_jwt_keys redis`: the key set at <prefix>jwks in Redis (syncd
writes it and publishes `keys` on the revocation channel). Keys only in
Redis; a rotation reaching every worker without a reload, for one GET in
total; a kid SET but not announced, found by the unknown-kid re-read; a
flood of made-up kids costing at most one GET per worker per 10 s; a
malformed set keeping the old keys; files and Redis combined; Redis down at
start; nginx -t.

PYTEST_DONT_REWRITE: no assertion may print a token (see jwt_suite.py)."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import jwt_suite  # puts tests/clerk on sys.path
import tokens as T

import harness
from harness import redis_directive, wait_until
from jwt_suite import _redacted_responses  # noqa: F401: fixture
from jwt_suite import AZP, ISS, expect, session_cookie, tok, write

PREFIX = "t9:"
JWKS_KEY = PREFIX + "jwks"
CHANNEL = PREFIX + "session:revocations"
# Which worker answered: both must follow a rotation.
HEADERS = harness.SESSION_HEADERS + """
            proxy_set_header X-Worker $pid;"""

key_a = jwt_suite.key_fixture("ins_a")
key_b = jwt_suite.key_fixture("ins_b")


def start(nginx, rds, keys="redis", workers=2, directives="", address=None):
    address = address or rds.address()
    params = "prefix=%s timeout=1s connect_timeout=1s" % PREFIX
    return nginx(http=redis_directive(address, params), workers=workers,
                 server=jwt_suite.location("/app/", keys, directives, AZP, headers=HEADERS) +
                 "\n        location = /metrics { session_metrics; }")


def metric(n, name):
    for line in n.get("/metrics").body.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError("no %s in /metrics" % name)


def gets(rds):
    return rds.calls("get")


def worker_of(resp):
    return resp.upstream_header("X-Worker")


def both_workers_accept(n, token, what):
    """Requests until each of the two workers has answered 200 (a 401 from
    either fails at once)."""
    seen = set()

    def done():
        resp = expect(n.get("/app/", headers=session_cookie(token)), 200, what)
        seen.add(worker_of(resp))
        return len(seen) == 2
    wait_until(done, 30, interval=0, what="both workers to answer (%s)" % what)


def made_up(key, i):
    return key.mint(jwt_suite.claims(sid="sess_%d" % i), kid="made_up_%d" % i)


# ---------------------------------------------------------------- sources

def test_keys_only_in_redis(nginx, rds, key_a):
    rds.client().set(JWKS_KEY, T.jwks(key_a))
    n = start(nginx, rds)
    resp = expect(n.get("/app/", headers=session_cookie(tok(key_a, sid="sess_r"))), 200)
    assert resp.upstream_header("X-Session-Id") == "sess_r", T.redact(resp)
    expect(n.get("/app/", headers=session_cookie(tok(T.SigningKey(kid="ins_a")))), 401,
           "same kid, another key")
    assert "keys read from \"%s\"" % JWKS_KEY in n.log()


def test_rotation_reaches_every_worker_for_one_get(nginx, rds, key_a, key_b):
    r = rds.client()
    r.set(JWKS_KEY, T.jwks(key_a))
    n = start(nginx, rds)
    # each worker reads the set when it starts
    wait_until(lambda: gets(rds) >= 2, what="both workers' first read")
    both_workers_accept(n, tok(key_a), "key a")
    before = gets(rds)
    r.set(JWKS_KEY, T.jwks(key_b))
    assert r.publish(CHANNEL, "keys") == 1, "one subscriber (worker 0)"
    wait_until(lambda: gets(rds) == before + 1, what="the subscriber's read")
    both_workers_accept(n, tok(key_b), "key b, announced")
    # one GET in total: the other worker took the set from shared memory
    # (within 10 s of its own start read, so no unknown-kid read either)
    assert gets(rds) == before + 1, "GETs after the message: %d" % (gets(rds) - before)
    for _ in range(6):
        expect(n.get("/app/", headers=session_cookie(tok(key_a))), 401, "key a, rotated out")


def test_rotation_drops_cached_verdicts_of_a_removed_key(nginx, rds, key_a, key_b):
    r = rds.client()
    r.set(JWKS_KEY, T.jwks(key_a, key_b))
    n = nginx(http=redis_directive(rds.address(), "prefix=%s timeout=1s" % PREFIX) +
              "session_cache_zone jwt:1m ttl=60s;", workers=1,
              server=jwt_suite.location("/app/", "redis", "session_cache jwt;", AZP, headers=HEADERS))
    old = tok(key_a)
    expect(n.get("/app/", headers=session_cookie(old)), 200)  # now cached
    before = gets(rds)
    r.set(JWKS_KEY, T.jwks(key_b))
    r.publish(CHANNEL, "keys")
    wait_until(lambda: gets(rds) > before, what="the subscriber's read")
    wait_until(lambda: n.get("/app/", headers=session_cookie(old)).status == 401,
               what="the cached verdict to be left behind")


def test_kid_set_but_not_announced_is_found_by_the_reread(nginx, rds, key_a, key_b):
    r = rds.client()
    r.set(JWKS_KEY, T.jwks(key_a))
    n = start(nginx, rds, workers=1)
    wait_until(lambda: gets(rds) >= 1, what="the worker's first read")
    r.set(JWKS_KEY, T.jwks(key_a, key_b))  # no PUBLISH
    new = tok(key_b)
    expect(n.get("/app/", headers=session_cookie(new)), 401, "read less than 10 s ago")
    time.sleep(10.5)  # the unknown-kid re-read is allowed again
    before = gets(rds)
    expect(n.get("/app/", headers=session_cookie(new)), 200, "after the re-read")
    assert gets(rds) == before + 1, "one GET for the re-read"
    expect(n.get("/app/", headers=session_cookie(tok(key_a))), 200, "key a still held")


def test_flood_of_made_up_kids_costs_one_get_per_worker_per_10s(nginx, rds, key_a):
    rds.client().set(JWKS_KEY, T.jwks(key_a))
    n = start(nginx, rds)
    wait_until(lambda: gets(rds) >= 2, what="both workers' first read")
    time.sleep(10.5)  # past the start reads: each worker may read once more
    before = gets(rds)
    began = time.monotonic()
    # concurrent: requests that arrive while a read is in flight wait for it
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(
            lambda i: n.get("/app/", headers=session_cookie(made_up(key_a, i))).status, range(200)))
    windows = 1 + int((time.monotonic() - began) // 10)
    assert statuses == [401] * 200, sorted(set(statuses))
    spent = gets(rds) - before
    assert 1 <= spent <= 2 * windows, "%d GETs for 200 made-up kids (%d windows)" % (spent, windows)
    expect(n.get("/app/", headers=session_cookie(tok(key_a))), 200, "the real key")
    assert n.log().count("token refused: unknown_key") == 200


def test_reload_keeps_the_set(nginx, rds, key_a):
    r = rds.client()
    r.set(JWKS_KEY, T.jwks(key_a))
    n = start(nginx, rds, workers=1)
    expect(n.get("/app/", headers=session_cookie(tok(key_a))), 200)
    r.set(JWKS_KEY, "not json")  # the new worker's own read is refused...
    before = set(n.worker_pids())
    n.reload()
    wait_until(lambda: n.worker_pids() and not before & set(n.worker_pids()), 15,
               what="the old workers to exit")
    wait_until(lambda: "in Redis is refused" in n.log(), what="the new worker's read")
    # ...and the set in the zone, which the reload kept, still verifies
    expect(n.get("/app/", headers=session_cookie(tok(key_a))), 200, "after the reload")


# ---------------------------------------------------------------- failures

def test_malformed_set_keeps_the_old_keys(nginx, rds, key_a):
    r = rds.client()
    r.set(JWKS_KEY, T.jwks(key_a))
    n = start(nginx, rds, workers=1)
    good = tok(key_a)
    expect(n.get("/app/", headers=session_cookie(good)), 200)
    for bad in ('{"keys": [ "MARKER-not-a-key',
                json.dumps({"keys": [dict(T.SigningKey(bits=1024, kid="small").jwk(), x="MARKER")]}),
                '{"keys": []} MARKER'):
        before = gets(rds)
        r.set(JWKS_KEY, bad)
        r.publish(CHANNEL, "keys")
        wait_until(lambda: gets(rds) > before, what="the read of the bad set")
        expect(n.get("/app/", headers=session_cookie(good)), 200, "old keys kept")
    # the same bad set again is not logged again
    before = gets(rds)
    r.publish(CHANNEL, "keys")
    wait_until(lambda: gets(rds) > before, what="a second read of the bad set")
    expect(n.get("/app/", headers=session_cookie(good)), 200, "old keys kept")
    log = n.log()
    assert log.count("in Redis is refused") == 3, log
    assert "MARKER" not in log, "the set's content reached the log"
    # a wrong type is refused the same way
    r.delete(JWKS_KEY)
    r.hset(JWKS_KEY, "a", "b")
    before = gets(rds)
    r.publish(CHANNEL, "keys")
    wait_until(lambda: gets(rds) > before, what="the read of a hash")
    expect(n.get("/app/", headers=session_cookie(good)), 200, "old keys kept after WRONGTYPE")
    # 3 bad sets, one of them twice, and the hash
    assert metric(n, "nginx_session_jwks_failures_total") == 5
    assert metric(n, "nginx_session_jwks_reads_total") == gets(rds)


def test_files_and_redis_combined(nginx, rds, tmp_path, key_a, key_b):
    rds.client().set(JWKS_KEY, T.jwks(key_b))
    file_key = T.SigningKey(kid="ins_file")
    n = start(nginx, rds, keys="%s redis" % write(tmp_path, "f.json", T.jwks(file_key)))
    expect(n.get("/app/", headers=session_cookie(tok(file_key))), 200, "file key")
    expect(n.get("/app/", headers=session_cookie(tok(key_b))), 200, "redis key")
    expect(n.get("/app/", headers=session_cookie(tok(key_a))), 401, "neither")


def test_pem_file_and_redis_combined(nginx, rds, tmp_path, key_a, key_b):
    # a kid-less PEM key is tried for any kid no key has: the re-read is then
    # still made for a token it does not verify
    r = rds.client()
    r.set(JWKS_KEY, T.jwks(key_b))
    pem_key = T.SigningKey(kid="ins_pem")
    n = start(nginx, rds, keys="%s redis" % write(tmp_path, "k.pem", pem_key.public_pem()),
              workers=1)
    expect(n.get("/app/", headers=session_cookie(tok(pem_key))), 200, "pem key")
    expect(n.get("/app/", headers=session_cookie(tok(key_b))), 200, "redis key")
    wait_until(lambda: gets(rds) >= 1, what="the worker's first read")
    r.set(JWKS_KEY, T.jwks(key_a, key_b))
    time.sleep(10.5)
    expect(n.get("/app/", headers=session_cookie(tok(key_a))), 200, "redis key, re-read")


def test_redis_down_at_start(nginx, redis_factory, tmp_path, key_b):
    port = harness.free_port()
    file_key = T.SigningKey(kid="ins_file")
    n = start(nginx, None, keys="%s redis" % write(tmp_path, "f.json", T.jwks(file_key)),
              directives="session_jwt_session off;", address="127.0.0.1:%d" % port)
    expect(n.get("/app/", headers=session_cookie(tok(file_key))), 200, "file key, Redis down")
    expect(n.get("/app/", headers=session_cookie(tok(key_b))), 401, "redis key, Redis down")
    rds = redis_factory(port=port)
    rds.client().set(JWKS_KEY, T.jwks(key_b))
    # both workers retry until Redis answers: the set arrives with no request
    wait_until(lambda: gets(rds) >= 2, 20, what="both workers to read the set")
    both_workers_accept(n, tok(key_b), "redis key, Redis up")
    expect(n.get("/app/", headers=session_cookie(tok(file_key))), 200, "file key, Redis up")
    rds.stop()
    both_workers_accept(n, tok(key_b), "redis key held, Redis down again")


# ---------------------------------------------------------------- nginx -t

def nginx_t(tmp_path, http, directives):
    text = harness.conf_text(str(tmp_path), 1, 1, http=http, server="""
        location /app/ { session_check on; %s session_jwt_issuer %s; proxy_pass http://app; }"""
                             % (directives, ISS))
    return harness.nginx_test_config(text, str(tmp_path))


def test_nginx_t(tmp_path, key_a):
    keys = write(tmp_path, "jwks.json", T.jwks(key_a))
    redis = "session_redis 127.0.0.1:6379;"
    rc, out = nginx_t(tmp_path, redis, "session_jwt_keys %s redis;" % keys)
    assert rc == 0, out
    rc, out = nginx_t(tmp_path, redis, "session_jwt_keys redis; session_jwt_session off;")
    assert rc == 0, out
    rc, out = nginx_t(tmp_path, "", "session_jwt_keys redis; session_jwt_session off;")
    assert rc != 0 and "\"session_jwt_keys\" has \"redis\"" in out and "session_redis" in out, out
    rc, out = nginx_t(tmp_path, redis, "session_jwt_keys redis %s redis;" % keys)
    assert rc != 0 and "in \"session_jwt_keys\" directive" in out, out


def test_keys_message_without_a_cache_zone_is_heard(nginx, rds, key_a):
    # the subscriber exists for the key set alone
    n = start(nginx, rds, workers=1)
    wait_until(lambda: rds.client().pubsub_numsub(CHANNEL)[0][1] == 1, what="the subscription")
    expect(n.get("/app/", headers=session_cookie(tok(key_a))), 401, "no set yet")
    rds.client().set(JWKS_KEY, T.jwks(key_a))
    rds.client().publish(CHANNEL, "keys")
    wait_until(lambda: n.get("/app/", headers=session_cookie(tok(key_a))).status == 200,
               what="the announced set")
    assert "is not set in Redis" in n.log()


# ---------------------------------------------------------------- cluster://

@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory):
    import topology
    yield from topology.managed(request, topology.RedisCluster(
        str(tmp_path_factory.mktemp("cluster"))))


def test_cluster_reads_the_set_on_its_slot(nginx, cluster, key_a, key_b):
    c = cluster.client()
    c.set(JWKS_KEY, T.jwks(key_a))
    n = nginx(http="session_redis %s prefix=%s timeout=1s connect_timeout=1s;"
              % (cluster.seed_url(), PREFIX), workers=1,
              server=jwt_suite.location("/app/", "redis", "session_jwt_session off;", AZP))
    wait_until(lambda: n.get("/app/", headers=session_cookie(tok(key_a))).status == 200, 15,
               what="the set read from the cluster")
    c.set(JWKS_KEY, T.jwks(key_b))
    c.publish(CHANNEL, "keys")
    wait_until(lambda: n.get("/app/", headers=session_cookie(tok(key_b))).status == 200, 15,
               what="the rotation, through the cluster")
    expect(n.get("/app/", headers=session_cookie(tok(key_a))), 401, "key a, rotated out")
