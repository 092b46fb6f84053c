"""Item 15: after a PostgreSQL restart the pool drops every idle connection
once one is found dead, instead of meeting each stale one in turn (each a
failed delivery)."""

import subprocess
import threading

from syncd_harness import Syncd, new_id, now_ms, user_data, wait_for

POOL = 6
USER_LOCK = "1398361667"  # store.cpp: the user's advisory lock class


def advisory_locks(pg, granted):
    return int(pg.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                         "AND classid = :'p1'::oid AND granted = :'p2'::boolean",
                         USER_LOCK, "true" if granted else "false"))


def fill_pool(pg, daemon, uid):
    """POOL deliveries for one user held on that user's advisory lock at
    once, so that each has a pooled connection of its own; then released:
    POOL idle connections stay in the pool."""
    holder = subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                               "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"uid={uid}"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    holder.stdin.write(f"SELECT pg_advisory_lock({USER_LOCK}, hashtext(:'uid'));\n")
    holder.stdin.flush()
    wait_for(lambda: advisory_locks(pg, granted=True) == 1, what="the test's lock")
    base = now_ms()
    statuses = []

    def send(i):
        statuses.append(daemon.deliver("user.updated", user_data(uid, base + i))[0])
    threads = [threading.Thread(target=send, args=(i,)) for i in range(POOL)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: advisory_locks(pg, granted=False) == POOL, timeout=20,
                 what="every pooled connection waiting on the lock")
    finally:
        holder.stdin.close()  # the session ends, the lock goes with it
        holder.wait(10)
        for t in threads:
            t.join(30)
    assert statuses == [200] * POOL, statuses


def test_restart_drops_every_stale_connection(pg, redis_server):
    daemon = Syncd(pg, redis_server, extra_env={"SYNCD_DB_POOL": str(POOL)}).start()
    try:
        uid = new_id("user")
        assert daemon.deliver("user.created", user_data(uid, now_ms() - 60_000))[0] == 200
        fill_pool(pg, daemon, uid)
        pg.stop()
        pg.start()
        # Without the fix each delivery meets two stale connections (the
        # try and its retry) and answers 503 until the stale ones are used up.
        base = now_ms() + 1000
        statuses = [daemon.deliver("user.updated", user_data(uid, base + i))[0]
                    for i in range(POOL)]
        failures = [s for s in statuses if not 200 <= s < 300]
        assert len(failures) <= 1, statuses
        assert pg.scalar("SELECT source_updated_at FROM users WHERE clerk_id = :'p1'",
                         uid) == str(base + POOL - 1)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.read_log()
