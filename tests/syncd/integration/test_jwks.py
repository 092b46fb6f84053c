"""The instance's keys for nginx (issue 9): syncd fetches Clerk's JWKS from
the Backend API (the stand-in) at start and every SYNCD_CLERK_JWKS_INTERVAL,
stores it in `<prefix>jwks` when its bytes changed and publishes `keys` on
the revocation channel (docs/redis-contract.md). Real syncd, PostgreSQL and
Redis."""

import json

import pytest

from clerk_backend_standin import ClerkBackendStandin
from syncd_harness import Syncd, wait_for

PREFIX = "kx:"
INTERVAL = 10  # the smallest SYNCD_CLERK_JWKS_INTERVAL syncd accepts


def jwk(kid):
    return {"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "e": "AQAB",
            "n": "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7"
                 "jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGE"}


def served(jwks):
    """The bytes the stand-in answers for a set (json.dumps), which syncd
    must store unchanged."""
    return json.dumps(jwks)


@pytest.fixture(scope="module")
def standin():
    with ClerkBackendStandin() as server:
        server.set_jwks({"keys": [jwk("ins_key_1")]})
        yield server


@pytest.fixture(scope="module")
def channel(redis_server):
    sub = redis_server.client.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(PREFIX + "session:revocations")
    yield sub
    sub.close()


@pytest.fixture(scope="module")
def daemon(pg, redis_server, standin, channel):
    d = Syncd(pg, redis_server, prefix=PREFIX, extra_env={
        "SYNCD_CLERK_SECRET_KEY": standin.secret,
        "SYNCD_CLERK_API_URL": standin.url,
        "SYNCD_CLERK_JWKS_INTERVAL": f"{INTERVAL}s"}).start()
    yield d
    code = d.stop()
    log = d.read_log()
    assert standin.secret not in log
    assert code == 0, log



def next_message(channel, timeout=40):
    def got():
        m = channel.get_message(timeout=0.2)
        return m["data"] if m else None
    return wait_for(got, timeout=timeout, what="a message on the revocation channel")


def fetches(standin):
    return len(standin.requests_to("/v1/jwks", method="GET"))


def wait_fetches(standin, n):
    """Waits until the stand-in has answered n more key set requests: the
    first of them has then been fully handled by syncd (stored or not)."""
    target = fetches(standin) + n
    wait_for(lambda: fetches(standin) >= target, timeout=INTERVAL * (n + 2),
             what=f"{n} more GET /v1/jwks")


def commandstats(rds, command):
    stats = rds.info("commandstats").get(f"cmdstat_{command}")
    return stats["calls"] if stats else 0


def test_keys_stored_at_start_and_announced(daemon, standin, rds, channel):
    wait_for(lambda: rds.get(PREFIX + "jwks") == served({"keys": [jwk("ins_key_1")]}),
             timeout=20, what="the key set in Redis")
    assert next_message(channel) == "keys"
    assert rds.ttl(PREFIX + "jwks") == -1  # no TTL
    assert daemon.metric("syncd_jwks_last_success_timestamp_seconds") > 0
    assert daemon.metric("syncd_jwks_updates_total") == 1


def test_unchanged_set_is_neither_written_nor_announced(daemon, standin, rds, channel):
    wait_for(lambda: rds.get(PREFIX + "jwks") is not None, timeout=20, what="the key set")
    sets, publishes = commandstats(rds, "set"), commandstats(rds, "publish")
    wait_fetches(standin, 2)
    assert commandstats(rds, "set") == sets
    assert commandstats(rds, "publish") == publishes
    assert channel.get_message(timeout=0) is None
    assert daemon.metric("syncd_jwks_updates_total") == 1


def test_rotation_reaches_redis_within_the_interval(daemon, standin, rds, channel):
    rotated = {"keys": [jwk("ins_key_1"), jwk("ins_key_2")]}
    standin.set_jwks(rotated)
    wait_for(lambda: rds.get(PREFIX + "jwks") == served(rotated), timeout=INTERVAL * 3,
             what="the rotated set in Redis")
    assert next_message(channel) == "keys"
    assert daemon.metric("syncd_jwks_updates_total") == 2


@pytest.mark.parametrize("broken", [b"{\"keys\": [", b"<html>bad gateway</html>",
                                    b"{\"keys\": []}", b"{\"errors\": []}"])
def test_a_broken_answer_keeps_the_stored_set(daemon, standin, rds, channel, broken):
    good = rds.get(PREFIX + "jwks")
    assert good is not None
    failures = daemon.metric("syncd_jwks_fetch_failures_total")
    standin.set_jwks(broken)
    try:
        wait_fetches(standin, 2)
        assert rds.get(PREFIX + "jwks") == good
        assert channel.get_message(timeout=0) is None
        assert daemon.metric("syncd_jwks_fetch_failures_total") >= failures + 1
    finally:
        standin.set_jwks(json.loads(good))
