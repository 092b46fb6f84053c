"""Item 15: the projector's heartbeat (which the systemd watchdog ping
vouches for) is fed per projected entry, not per batch: a long batch whose
entries each progress does not starve the watchdog."""

import socket
import subprocess

from syncd_harness import (Syncd, hold_lock, new_id, now_ms, release, user_data, wait_for)



def test_each_entry_of_a_batch_feeds_the_watchdog(pg, redis_server, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    # No statement_timeout: a blocked entry stays blocked until the test
    # lets it go (a cancelled statement would restart the loop, and beat).
    daemon = Syncd(pg, redis_server, extra_env={
        "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000",
        "SYNCD_DATABASE_URL": pg.url + "?options=-c%20statement_timeout%3D0"}).start()
    holders = []
    try:
        # Two users: `gone` is deleted (its projection reads no membership),
        # `live` is not (its projection reads memberships).
        gone, live = new_id("user"), new_id("user")
        assert daemon.deliver("user.created", user_data(gone, now_ms()))[0] == 200
        assert daemon.deliver("user.deleted", {"object": "user", "id": gone,
                                               "deleted": True})[0] == 200
        assert daemon.deliver("user.created", user_data(live, now_ms()))[0] == 200
        rds = redis_server.client
        wait_for(lambda: (rds.get("syncd:marker") or "").startswith("reconciled"),
                 what="the first resync")
        wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", what="outbox drained")
        # One batch of two entries: the first blocks on `users`, the second
        # on `memberships`.
        holders.append(hold_lock(pg, "users"))
        holders.append(hold_lock(pg, "memberships"))
        mark = len(daemon.read_log())
        # One statement: both entries committed together, so one batch.
        pg.query("INSERT INTO outbox (kind, key) VALUES ('user', :'p1'), ('user', :'p2')",
                 gone, live)
        wait_for(lambda: "withholding the watchdog ping" in daemon.read_log()[mark:],
                 what="the ping to be withheld while the first entry is blocked")
        # The first entry completes; the second is still blocked, in the
        # same batch. Fed per batch, the heartbeat would not move until the
        # whole batch is done, and the ping would stay withheld.
        release(holders.pop(0))
        wait_for(lambda: "watchdog pings resumed" in daemon.read_log()[mark:],
                 what="the ping to resume after the first entry of the batch")
        release(holders.pop(0))
        wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", what="outbox drained")
        assert rds.hget(f"user:{live}", "status") == "active"
    finally:
        for h in holders:
            release(h)
        assert daemon.stop() == 0
        sock.close()
