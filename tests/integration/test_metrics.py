"""session_metrics: Prometheus text, values, shared across workers."""

import re

import harness
from harness import (METRICS_LOCATION, app_location, cookie, metric, parse_metrics,
                     redis_directive, seed_session, seed_user)

FAMILIES = {
    "nginx_session_checks_total": "counter",
    "nginx_session_cache_hits_total": "counter",
    "nginx_session_cache_misses_total": "counter",
    "nginx_session_redis_errors_total": "counter",
    "nginx_session_redis_timeouts_total": "counter",
    "nginx_session_redis_reconnects_total": "counter",
    "nginx_session_redis_connected_workers": "gauge",
    "nginx_session_workers": "gauge",
    "nginx_session_touches_total": "counter",
    "nginx_session_redis_lookup_seconds": "histogram",
}
OUTCOMES = ["ok", "missing", "invalid", "expired", "revoked", "forbidden", "error", "stale"]


def start(nginx, rds, **kw):
    return nginx(http=redis_directive(rds.address()),
                 server=app_location("/app/") + app_location("/admin/", "session_require_role admin;")
                 + METRICS_LOCATION, **kw)


def scrape(n):
    resp = n.get("/metrics")
    assert resp.status == 200, resp
    assert resp.header("Content-Type", "").startswith("text/plain"), resp.headers
    return resp.body


def test_format_and_families(nginx, rds):
    n = start(nginx, rds)
    text = scrape(n)
    values, types = parse_metrics(text)
    for name, kind in FAMILIES.items():
        assert types.get(name) == kind, "# TYPE %s %s missing:\n%s" % (name, kind, text)
    for outcome in OUTCOMES:
        assert ("nginx_session_checks_total", '{outcome="%s"}' % outcome) in values, outcome
    for name in FAMILIES:
        if FAMILIES[name] != "histogram" and name != "nginx_session_checks_total":
            assert (name, "") in values, name
    assert text.endswith("\n")
    # every sample is a non-negative number; nothing counted yet
    assert all(v >= 0 for v in values.values())
    assert metric(values, "nginx_session_checks_total", '{outcome="ok"}') == 0
    assert metric(values, "nginx_session_workers") == 1


def test_outcome_counters(nginx, rds, r):
    seed_session(r, "sess_ok", "user_a")
    seed_user(r, "user_a", role="admin")
    seed_session(r, "sess_v", "user_v")
    seed_user(r, "user_v", role="viewer")
    seed_session(r, "sess_exp", "user_a", expires_in_ms=-10)
    seed_session(r, "sess_rev", "user_a", status="revoked")
    n = start(nginx, rds)
    expect = {"ok": 3, "missing": 2, "invalid": 1, "expired": 1, "revoked": 1, "forbidden": 1}
    for _ in range(3):
        assert n.get("/app/", headers=cookie("sess_ok")).status == 200
    n.get("/app/"), n.get("/admin/")
    n.get("/app/", headers=cookie("sess_nope"))
    n.get("/app/", headers=cookie("sess_exp"))
    n.get("/app/", headers=cookie("sess_rev"))
    assert n.get("/admin/", headers=cookie("sess_v")).status == 403
    values, _ = parse_metrics(scrape(n))
    for outcome in OUTCOMES:
        got = metric(values, "nginx_session_checks_total", '{outcome="%s"}' % outcome)
        assert got == expect.get(outcome, 0), (outcome, got)
    assert metric(values, "nginx_session_redis_errors_total") == 0
    assert metric(values, "nginx_session_redis_connected_workers") == 1


def test_lookup_histogram(nginx, rds, r):
    seed_session(r, "sess_h", "user_h")
    n = start(nginx, rds)
    for _ in range(4):
        n.get("/app/", headers=cookie("sess_h"))
    n.get("/app/")  # no token: no lookup
    text = scrape(n)
    values, _ = parse_metrics(text)
    buckets = []
    for (name, labels), v in values.items():
        if name == "nginx_session_redis_lookup_seconds_bucket":
            m = re.fullmatch(r'\{le="([^"]+)"\}', labels)
            assert m, labels
            buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), v))
    buckets.sort()
    assert len(buckets) >= 2 and buckets[-1][0] == float("inf"), buckets
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets are not cumulative: %r" % buckets
    count = metric(values, "nginx_session_redis_lookup_seconds_count")
    assert count == 4
    assert buckets[-1][1] == count
    total = metric(values, "nginx_session_redis_lookup_seconds_sum")
    assert 0 < total < 4 * 10, total  # seconds, not microseconds


def test_counters_shared_across_workers(nginx, rds, r):
    seed_session(r, "sess_s", "user_s")
    n = nginx(http=redis_directive(rds.address())
              + "\n    log_format pids '$pid $status';\n    access_log @TMP@/pids.log pids;",
              server=app_location("/app/") + METRICS_LOCATION, workers=2, listen_extra="reuseport")
    harness.wait_until(lambda: len(n.worker_pids()) == 2, 10, what="two workers")
    total = 40
    for _ in range(total):
        assert n.get("/app/", headers=cookie("sess_s")).status == 200
    with open(n.tmp + "/pids.log") as f:
        pids = {l.split()[0] for l in f if l.strip()}
    assert len(pids) == 2, "all requests went to one worker; the test proves nothing: %r" % pids
    # scrape several times: every worker must report the same shared totals
    for _ in range(6):
        values, _ = parse_metrics(scrape(n))
        assert metric(values, "nginx_session_checks_total", '{outcome="ok"}') == total
        assert metric(values, "nginx_session_workers") == 2
        assert metric(values, "nginx_session_redis_lookup_seconds_count") == total
    assert metric(values, "nginx_session_redis_connected_workers") in (1, 2)


def test_metrics_location_needs_no_session(nginx, rds):
    # the metrics location itself answers without a token
    n = nginx(http=redis_directive(rds.address()), server="""
        session_check on;
        session_token cookie=sessionId;
        location = /metrics { session_check off; session_metrics; }
        location / { proxy_pass http://app; }""")
    assert n.get("/metrics").status == 200
    assert n.get("/").status == 401
