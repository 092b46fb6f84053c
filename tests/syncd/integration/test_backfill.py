"""`syncd backfill` against the stand-in Backend API (clerk_backend_standin.py),
a real PostgreSQL and a real Redis: every object imported through the
webhooks' own rules, resumable after an interruption, never overwriting a
newer webhook state, honouring 429 + Retry-After and retrying 5xx."""

import signal
import subprocess
import time

import pytest

from clerk_backend_standin import ClerkBackendStandin, make_user
from syncd_harness import (SYNCD_BIN, Postgres, Syncd, now_ms, session_data, user_data,
                           wait_for)

PAGE = 500


@pytest.fixture
def pg():
    # A fresh cluster per test: the counts below are exact.
    server = Postgres()
    yield server
    server.close()


@pytest.fixture
def api():
    with ClerkBackendStandin() as standin:
        yield standin


def daemon(pg, redis_server, api, secret=None):
    d = Syncd(pg, redis_server, extra_env={
        "SYNCD_CLERK_SECRET_KEY": secret or api.secret,
        "SYNCD_CLERK_API_URL": api.url,
    })
    d.run("migrate")
    return d


def backfill(d, *args, check=True, timeout=300):
    argv = [SYNCD_BIN, "backfill"] + list(args)
    out = subprocess.run(argv, env=d.env, capture_output=True, text=True, timeout=timeout)
    # The key travels in a header only: never in what syncd prints.
    assert d.env["SYNCD_CLERK_SECRET_KEY"] not in out.stdout + out.stderr
    if check:
        assert out.returncode == 0, out.stderr
    return out


def list_requests(api, path):
    return [r for r in api.requests_to(path, method="GET") if r.path == path]


def test_ten_thousand_users_in_pages_then_projected(pg, redis_server, rds, api):
    users = api.add_users(10_000, role=None)
    admin = api.add_user(make_user(role="admin", created_at=now_ms() - 5_000_000))
    org = api.add_org(slug="acme")
    for u in users[:40]:
        api.add_membership(org, u["id"], role="org:admin")
    sessions = [api.add_session(u["id"]) for u in users[:25]]
    api.add_session(users[0]["id"], status="ended")  # not listed: status=active only
    d = daemon(pg, redis_server, api)

    started = time.monotonic()
    out = backfill(d)
    elapsed = time.monotonic() - started
    user_pages = list_requests(api, "/v1/users")
    # The largest page Clerk allows, ordered oldest first, '+' escaped.
    assert all(r.query["limit"] == "500" and r.query["order_by"] == "+created_at"
               for r in user_pages)
    assert len(user_pages) == 21  # 10,001 users, pages overlapping by one
    assert pg.scalar("SELECT count(*) FROM users WHERE deleted_at IS NULL") == "10001"
    assert pg.scalar("SELECT role FROM users WHERE clerk_id = :'p1'", admin["id"]) == "admin"
    assert pg.scalar("SELECT count(*) FROM memberships") == "40"
    assert pg.scalar("SELECT count(*) FROM organizations") == "1"
    assert pg.scalar("SELECT count(*) FROM sessions WHERE status = 'active'") == "25"
    # One sessions call per live user, each filtered as Clerk requires.
    session_calls = api.requests_to("/v1/sessions")
    assert len(session_calls) == 10_001
    assert all(r.query["status"] == "active" and r.query.get("user_id") for r in session_calls)
    assert "users: 10001 created, 0 updated, 0 unchanged, 0 skipped as stale" in out.stdout
    assert "memberships: 40 created" in out.stdout and "sessions: 25 created" in out.stdout
    assert "objects/s" in out.stderr and "pages" in out.stderr
    users_line = [l for l in out.stderr.splitlines() if "backfill: users:" in l][-1]
    print(f"\nbackfill of 10,001 users + sessions calls: {elapsed:.1f} s; {users_line}")
    # The run is complete: no cursor left, the run recorded.
    assert pg.scalar("SELECT count(*) FROM backfill_cursor") == "0"
    assert pg.scalar("SELECT count(*) FROM backfill_runs") == "1"

    # Redis: through the outbox, applied by serve's projector.
    d.start()
    try:
        wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", timeout=120,
                 what="the outbox to drain")
        assert rds.hget(f"user:{admin['id']}", "role") == "admin"
        assert rds.hget(f"user:{users[0]['id']}", "roles") == "user acme/org:admin" or \
            "org:admin" in rds.hget(f"user:{users[0]['id']}", "roles")
        assert rds.hget(f"sess:{sessions[3]['id']}", "user_id") == users[3]["id"]
        assert rds.exists(f"user:{users[-1]['id']}")
    finally:
        d.stop()

    # A second run starts over and finds everything as it is.
    api.clear_requests()
    again = backfill(d)
    assert "users: 0 created, 0 updated, 10001 unchanged" in again.stdout


def kill_backfill_after(d, api, ok_requests):
    """Runs `syncd backfill`, lets `ok_requests` user-list requests succeed
    and fails every later one, then kills the process (SIGKILL) once it has
    seen the first failure: an interruption mid-run."""
    api.fail_after(ok_requests, status=500, path_prefix="/v1/users")
    proc = subprocess.Popen([SYNCD_BIN, "backfill"], env=d.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(r.status == 500 for r in api.requests_to("/v1/users")),
                 timeout=60, what="the first failed page")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)


def test_interrupted_run_resumes_after_the_last_committed_page(pg, redis_server, api):
    users = api.add_users(3_000)
    d = daemon(pg, redis_server, api)
    # The count, then three pages; every later /v1/users call fails.
    kill_backfill_after(d, api, 4)
    assert pg.scalar("SELECT next_offset FROM backfill_cursor WHERE kind = 'users'") == "1498"
    assert pg.scalar("SELECT count(*) FROM users") == "1498"

    api.clear_failures()
    api.clear_requests()
    out = backfill(d)
    pages = list_requests(api, "/v1/users")
    # No finished page fetched again: the first asks from the last object
    # committed (the overlap that detects a moved listing).
    assert [int(r.query["offset"]) for r in pages] == [1497, 1996, 2495, 2994]
    assert pg.scalar("SELECT count(*) FROM users") == "3000"
    assert pg.scalar("SELECT count(DISTINCT clerk_id) FROM users") == "3000"
    assert {u["id"] for u in users} == {row[0] for row in pg.query("SELECT clerk_id FROM users")}
    # The counters survive the interruption.
    assert "users: 3000 created, 0 updated, 0 unchanged" in out.stdout
    assert pg.scalar("SELECT count(*) FROM backfill_cursor") == "0"


def test_users_deleted_while_paging_are_not_skipped_for_others(pg, redis_server, api):
    users = api.add_users(1_200)
    d = daemon(pg, redis_server, api)
    kill_backfill_after(d, api, 2)  # count + first page
    # Users before the cursor vanish: every later one moves back by ten.
    for u in users[100:110]:
        api.delete_user(u["id"])
    api.clear_failures()
    backfill(d)
    live = {row[0] for row in pg.query("SELECT clerk_id FROM users")}
    assert {u["id"] for u in users[500:]} <= live


def test_backfill_racing_webhooks_never_overwrites_newer_or_resurrects(
        pg, redis_server, rds, api):
    t0 = now_ms() - 600_000
    listed = [api.add_user(make_user(role="member", created_at=t0 + i, updated_at=t0 + 1000 + i))
              for i in range(600)]
    for u in listed[:300]:
        api.add_session(u["id"])
    d = daemon(pg, redis_server, api)
    d.start()
    try:
        def newer(u):
            data = user_data(u["id"], u["updated_at"] + 5000, role="admin",
                             email=f"{u['id']}@example.com")
            return d.deliver("user.updated", data)[0]

        # Half before the backfill, half while it runs.
        for u in listed[:100]:
            assert newer(u) == 200
        for u in listed[500:550]:
            assert d.deliver("user.deleted", {"object": "user", "id": u["id"],
                                              "deleted": True})[0] == 200
        proc = subprocess.Popen([SYNCD_BIN, "backfill", "--limit", "50"], env=d.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for u in listed[100:200]:
            assert newer(u) == 200
        for u in listed[550:600]:
            assert d.deliver("user.deleted", {"object": "user", "id": u["id"],
                                              "deleted": True})[0] == 200
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        roles = dict(pg.query("SELECT clerk_id, role FROM users WHERE deleted_at IS NULL"))
        for u in listed[:200]:
            assert roles[u["id"]] == "admin", u["id"]  # the newer webhook won
        for u in listed[200:500]:
            assert roles[u["id"]] == "member"
        for u in listed[500:]:
            assert u["id"] not in roles  # never resurrected
        wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", timeout=60,
                 what="the outbox to drain")
        assert rds.hget(f"user:{listed[150]['id']}", "role") == "admin"
        assert not rds.hget(f"user:{listed[560]['id']}", "role")
        assert "skipped as stale" in out
    finally:
        d.stop()


def test_429_retry_after_is_honoured_and_5xx_retried(pg, redis_server, api):
    api.add_users(10)
    api.add_org(slug="acme")
    d = daemon(pg, redis_server, api)
    api.fail_next(1, status=429, retry_after="2", path_prefix="/v1/users")
    api.fail_next(2, status=503, path_prefix="/v1/organizations")
    api.fail_next(1, status=502, path_prefix="/v1/sessions")
    out = backfill(d)
    users = api.requests_to("/v1/users")
    assert users[0].status == 429 and users[1].status == 200
    # The stand-in's own clock: the retry came no earlier than Retry-After.
    assert users[1].time - users[0].time >= 2.0
    orgs = api.requests_to("/v1/organizations")
    assert [r.status for r in orgs] == [503, 503, 200]
    assert "organizations: 1 created" in out.stdout
    assert pg.scalar("SELECT count(*) FROM users") == "10"


def test_bad_secret_key_names_the_key_without_its_value(pg, redis_server, api):
    d = daemon(pg, redis_server, api, secret="sk_test_WRONGwrongWRONG")
    out = backfill(d, check=False)
    assert out.returncode == 1
    assert "SYNCD_CLERK_SECRET_KEY" in out.stderr and "401" in out.stderr
    assert "WRONGwrong" not in out.stdout + out.stderr
    assert len(api.requests) == 1  # a 401 is not retried

    # check-config says whether the key is set, never what it is.
    checked = subprocess.run([SYNCD_BIN, "check-config"], env=d.env, capture_output=True,
                             text=True, timeout=30)
    assert "secret key set" in checked.stdout, checked.stdout + checked.stderr
    assert "WRONGwrong" not in checked.stdout + checked.stderr

    d.env.pop("SYNCD_CLERK_SECRET_KEY")
    missing = subprocess.run([SYNCD_BIN, "backfill"], env=d.env, capture_output=True, text=True,
                             timeout=30)
    assert missing.returncode == 78
    assert "SYNCD_CLERK_SECRET_KEY" in missing.stderr


def test_since_skips_older_objects_locally(pg, redis_server, api):
    old = api.add_users(20, start_ms=now_ms() - 10 * 86400_000)
    recent = api.add_users(5, start_ms=now_ms() - 3600_000)
    d = daemon(pg, redis_server, api)
    out = backfill(d, "--since", "1d")
    assert "users: 5 created" in out.stdout and "20 older than --since" in out.stdout
    assert pg.scalar("SELECT count(*) FROM users") == "5"
    assert {r[0] for r in pg.query("SELECT clerk_id FROM users")} == {u["id"] for u in recent}
    assert old
