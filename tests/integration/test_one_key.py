"""The opaque check's one-key read (contract version 2, issue 8): a session
hash that carries its user's fields is answered by one HMGET of one key, no
script; one without them (an application's, or written before version 2)
costs a second HMGET of the user hash, as the lookup script did."""

import re

import pytest

import harness
from harness import (METRICS_LOCATION, SESSION_READ_FIELDS, USER_FIELDS, app_location, cookie,
                     metric, parse_metrics, redis_directive, seed_session, seed_session_v2,
                     seed_user, wait_until)

CHECK_COMMANDS = ("hmget", "hgetall", "hget", "evalsha", "eval", "evalsha_ro", "eval_ro", "fcall")


def start(nginx, rds, params="timeout=1s connect_timeout=1s", http="", directives=""):
    return nginx(http=redis_directive(rds.address(), params) + http,
                 server=app_location("/app/", directives)
                 + app_location("/admin/", "session_require_role admin;")
                 + METRICS_LOCATION)


def reads(rds):
    """The check's reads since CONFIG RESETSTAT, by command."""
    stats = rds.client().info("commandstats")
    return {c: int(stats["cmdstat_" + c]["calls"])
            for c in CHECK_COMMANDS if "cmdstat_" + c in stats}


def fresh_stats(n, rds):
    """Once the module's connection is up (its handshake loads the touch
    script), count from zero: only the checks are left to count."""
    # Redis 7 counts subcommands apart: cmdstat_script|load.
    wait_until(lambda: any(k.startswith("cmdstat_script") for k in rds.client().info("commandstats")),
               10, what="the module's handshake")
    rds.client().config_resetstat()


def monitor_args(line):
    return re.findall(r'"((?:[^"\\]|\\.)*)"', line.split("]", 1)[1])


def monitored(rds, request, hmgets):
    """request() under MONITOR: its response, and the HMGETs Redis ran."""
    mon = harness.Monitor(rds)
    try:
        resp = request()
        wait_until(lambda: len([l for l in mon.lines if '"HMGET"' in l.upper()]) >= hmgets, 5,
                   what="MONITOR to show the reads")
    finally:
        mon.close()
    return resp, [monitor_args(l) for l in mon.lines if '"HMGET"' in l.upper()]


def latency_count(n):
    resp = n.get("/metrics")
    assert resp.status == 200, resp
    return metric(parse_metrics(resp.body)[0], "nginx_session_redis_lookup_seconds_count")


# ------------------------------------------------------------- (a) one key

@pytest.mark.parametrize("prefix", ["", "app1:"])
def test_version_two_session_is_one_hmget_of_one_key(nginx, rds, r, upstream, prefix):
    seed_session_v2(r, "sess_v2", "user_v2", role="admin", roles="admin org_1/org:admin",
                    db_id=42, email="v2@example.com", prefix=prefix)
    assert not r.exists("%suser:user_v2" % prefix)  # nothing else to read
    params = "timeout=1s connect_timeout=1s" + (" prefix=%s" % prefix if prefix else "")
    n = start(nginx, rds, params=params)
    fresh_stats(n, rds)
    resp, hmgets = monitored(rds, lambda: n.get("/admin/", headers=cookie("sess_v2")), 1)
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_v2"
    assert resp.upstream_header("X-User-Role") == "admin"
    assert resp.upstream_header("X-User-Roles") == "admin org_1/org:admin"
    assert resp.upstream_header("X-User-Db-Id") == "42"
    assert resp.upstream_header("X-User-Email") == "v2@example.com"
    assert resp.upstream_header("X-Session-Status") == "ok"
    # no EVAL/EVALSHA, no user hash: one HMGET of the session's key
    assert reads(rds) == {"hmget": 1}, reads(rds)
    assert hmgets == [["HMGET", "%ssess:sess_v2" % prefix] + list(SESSION_READ_FIELDS)], hmgets
    assert latency_count(n) == 1


def test_version_two_session_without_roles(nginx, rds, r, upstream):
    # user_status alone marks the copies: a user with no role is a member of
    # nothing, and the user hash (which says admin) is not read.
    seed_session_v2(r, "sess_norole", "user_nr", role=None)
    seed_user(r, "user_nr", role="admin")
    n = start(nginx, rds)
    fresh_stats(n, rds)
    resp = n.get("/app/", headers=cookie("sess_norole"))
    assert resp.status == 200, resp
    assert not resp.upstream_header("X-User-Role")  # empty: nginx drops the header
    assert n.get("/admin/", headers=cookie("sess_norole")).status == 403
    assert reads(rds) == {"hmget": 2}, reads(rds)  # one per request


# --------------------------------------------------- (b) version 1: two reads

def test_version_one_session_reads_its_user_hash(nginx, rds, r, upstream):
    seed_session(r, "sess_v1", "user_v1")
    seed_user(r, "user_v1", role="admin", db_id=7, email="v1@example.com")
    n = start(nginx, rds)
    fresh_stats(n, rds)
    resp, hmgets = monitored(rds, lambda: n.get("/admin/", headers=cookie("sess_v1")), 2)
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Role") == "admin"
    assert resp.upstream_header("X-User-Db-Id") == "7"
    assert resp.upstream_header("X-User-Email") == "v1@example.com"
    assert reads(rds) == {"hmget": 2}, reads(rds)
    assert hmgets == [["HMGET", "sess:sess_v1"] + list(SESSION_READ_FIELDS),
                      ["HMGET", "user:user_v1"] + list(USER_FIELDS)], hmgets
    # one check, one latency: from the first read's send to the second's reply
    assert latency_count(n) == 1


@pytest.mark.parametrize("status,expected", [("banned", 401), ("deleted", 401),
                                             ("suspended", 401), ("active", 200)])
def test_version_one_user_status_still_decides(nginx, rds, r, upstream, status, expected):
    seed_session(r, "sess_v1s", "user_v1s")
    seed_user(r, "user_v1s", role="member", status=status)
    n = start(nginx, rds)
    fresh_stats(n, rds)
    assert n.get("/app/", headers=cookie("sess_v1s")).status == expected
    assert n.last_session_status() == ("ok" if expected == 200 else "revoked")
    assert reads(rds) == {"hmget": 2}, reads(rds)


def test_version_one_session_without_user_hash_has_no_role(nginx, rds, r, upstream):
    seed_session(r, "sess_nouser", "user_gone")
    n = start(nginx, rds)
    fresh_stats(n, rds)
    assert n.get("/app/", headers=cookie("sess_nouser")).status == 200
    assert n.get("/admin/", headers=cookie("sess_nouser")).status == 403
    assert reads(rds) == {"hmget": 4}, reads(rds)


@pytest.mark.parametrize("seed,outcome", [
    (dict(expires_in_ms=-1000), "expired"),
    (dict(status="revoked"), "revoked"),
    (dict(token_type="jwt"), "invalid"),
    (dict(user_id=None), "invalid"),
])
def test_session_that_refuses_by_itself_is_one_read(nginx, rds, r, upstream, seed, outcome):
    seed_session(r, "sess_self", **seed)
    seed_user(r, "user_1", role="admin")
    n = start(nginx, rds)
    fresh_stats(n, rds)
    assert n.get("/app/", headers=cookie("sess_self")).status == 401
    assert n.last_session_status() == outcome
    assert n.get("/app/", headers=cookie("sess_nobody")).status == 401
    assert n.last_session_status() == "invalid"
    assert reads(rds) == {"hmget": 2}, reads(rds)  # one per request, no user hash
    assert upstream.requests == []


def test_version_one_combined_record_is_cached(nginx, rds, r, upstream):
    seed_session(r, "sess_c1", "user_c1")
    seed_user(r, "user_c1", role="admin", email="c1@example.com")
    n = start(nginx, rds, http="\n    session_cache_zone one:1m ttl=60s;",
              directives="session_cache one;")
    fresh_stats(n, rds)
    assert n.get("/app/", headers=cookie("sess_c1")).status == 200
    r.delete("user:user_c1")
    resp = n.get("/app/", headers=cookie("sess_c1"))
    assert resp.status == 200, resp
    # the cached entry holds the user's fields read by the second HMGET
    assert resp.upstream_header("X-User-Role") == "admin"
    assert resp.upstream_header("X-User-Email") == "c1@example.com"
    assert reads(rds) == {"hmget": 2}, reads(rds)


# ---------------------------------------- (c) the user's status, from the copy

@pytest.mark.parametrize("user_status", ["banned", "deleted", "suspended", "Active", ""])
def test_version_two_user_status_refuses_from_the_session_hash(nginx, rds, r, upstream,
                                                               user_status):
    seed_session_v2(r, "sess_ban", "user_ban", user_status=user_status, role="admin")
    seed_user(r, "user_ban", role="admin", status="active")  # never read
    n = start(nginx, rds)
    fresh_stats(n, rds)
    resp = n.get("/app/", headers=cookie("sess_ban"))
    assert resp.status == 401, resp
    assert n.last_session_status() == "revoked"
    assert reads(rds) == {"hmget": 1}, reads(rds)
    assert upstream.requests == []


# ------------------------------------------------ (d) the session hash counts

def test_version_two_copy_wins_over_the_user_hash(nginx, rds, r, upstream):
    # A writer of version 2 changes a user in every session hash of the user
    # (found through <prefix>user_sessions:<user id>), then in user:<id>. The
    # check reads the session hash only: a user hash that alone says banned
    # does not refuse it, and one that alone says active does not let it in.
    seed_session_v2(r, "sess_ok", "user_d", user_status="active", role="admin")
    seed_session_v2(r, "sess_no", "user_e", user_status="banned", role="admin")
    seed_user(r, "user_d", role="member", status="banned")
    seed_user(r, "user_e", role="admin", status="active")
    n = start(nginx, rds)
    fresh_stats(n, rds)
    resp = n.get("/admin/", headers=cookie("sess_ok"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Role") == "admin"
    assert n.get("/app/", headers=cookie("sess_no")).status == 401
    assert n.last_session_status() == "revoked"
    assert reads(rds) == {"hmget": 2}, reads(rds)


def test_copies_without_user_status_are_not_trusted(nginx, rds, r, upstream):
    # An application's session hash may hold a `role` of its own: without
    # user_status it is no copy, and the user hash decides.
    seed_session(r, "sess_app", "user_app", role="admin")
    seed_user(r, "user_app", role="member", status="banned")
    n = start(nginx, rds)
    fresh_stats(n, rds)
    assert n.get("/admin/", headers=cookie("sess_app")).status == 401
    assert n.last_session_status() == "revoked"
    assert reads(rds) == {"hmget": 2}, reads(rds)


def test_control_byte_in_a_copy_is_invalid(nginx, rds, r, upstream):
    seed_session_v2(r, "sess_cr", "user_cr", email="a@example.com\r\nX-Admin: 1")
    n = start(nginx, rds)
    assert n.get("/app/", headers=cookie("sess_cr")).status == 401
    assert n.last_session_status() == "invalid"
    assert 'control byte in "user:email"' in n.log()
    assert upstream.requests == []


# ---------------------------------------------- the second read's own timeout

def test_second_read_times_out_on_its_own(nginx, fake_redis):
    # The fake answers the session read at once (a hash without the user's
    # copies) and never the user read: the check fails as Redis unavailable
    # (503, the default fail mode), within the timeout of the second read.
    fake = fake_redis(mode="v1_stall_user", user_id="user_slow")
    n = nginx(http=redis_directive(fake.address(), "timeout=300ms connect_timeout=1s"),
              server=app_location("/app/"))
    resp = n.get("/app/", headers=cookie("sess_slowuser"), timeout=30)
    assert resp.status == 503, resp
    assert n.last_session_status() == "error"
    hmgets = [c[:2] for c in fake.saw("HMGET")]
    assert hmgets == [["HMGET", "sess:sess_slowuser"], ["HMGET", "user:user_slow"]], hmgets
    assert "lookup timed out" in n.log()
