"""kill -9 of syncd in the middle of a burst of concurrent deliveries; the
sender replays every delivery that did not get a 2xx until all have: every
event is then applied exactly once and Redis matches PostgreSQL."""

import http.client
import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

from syncd_harness import Syncd, new_id, now_ms, session_data, user_data, wait_for

SENDERS = 16
SESSIONS = 300
USER_VERSIONS = 60
KILL_AFTER = 80


def test_kill_9_during_burst(pg, redis_server):
    rds = redis_server.client
    daemon = Syncd(pg, redis_server).start()
    uid, t0 = new_id("user"), now_ms()
    events = [("user.updated", user_data(uid, t0 + i, role=f"r{i}"), new_id("msg"))
              for i in range(USER_VERSIONS)]
    events += [("session.created", session_data(new_id("sess"), uid), new_id("msg"))
               for _ in range(SESSIONS)]
    outcomes = {msg: [] for _, _, msg in events}
    lock = threading.Lock()

    answered = []

    def send(event):
        event_type, data, msg = event
        try:
            status, body, _ = daemon.deliver(event_type, data, msg_id=msg)
        except (OSError, http.client.HTTPException):
            status, body = None, ""
        with lock:
            outcomes[msg].append((status, body))
            answered.append(status)
            # The kill lands in the middle of the burst, whatever the speed.
            if len(answered) == KILL_AFTER and daemon.proc:
                daemon.proc.send_signal(signal.SIGKILL)
        return status

    with ThreadPoolExecutor(SENDERS) as pool:
        first = list(pool.map(send, events))
    daemon.proc.wait(10)
    ok_before = sum(1 for s in first if s == 200)
    assert ok_before < len(events), "the kill came too late to test anything"

    daemon.start()
    try:
        for attempt in range(10):
            pending = [e for e in events if not any(s == 200 for s, _ in outcomes[e[2]])]
            if not pending:
                break
            with ThreadPoolExecutor(SENDERS) as pool:
                list(pool.map(send, pending))
        assert not pending
        # A redelivery of something already acknowledged changes nothing.
        with ThreadPoolExecutor(SENDERS) as pool:
            again = list(pool.map(send, events[:50]))
        assert set(again) == {200}

        ids = [msg for _, _, msg in events]
        rows = pg.query("SELECT outcome, count(*) FROM webhook_events WHERE id = ANY(:'p1') "
                        "GROUP BY outcome", "{" + ",".join(ids) + "}")
        counts = {outcome: int(n) for outcome, n in rows}
        assert sum(counts.values()) == len(events)
        # Each session once, each user version once (applied or, if a newer
        # one was committed first, stale), and at most one "applied" answer
        # per delivery id.
        for msg in ids:
            applied = [b for s, b in outcomes[msg] if s == 200 and json.loads(b)["outcome"] == "applied"]
            assert len(applied) <= 1, msg
        sessions = [d["id"] for ty, d, _ in events if ty == "session.created"]
        assert pg.scalar("SELECT count(*) FROM sessions WHERE id = ANY(:'p1')",
                         "{" + ",".join(sessions) + "}") == str(SESSIONS)
        assert pg.query("SELECT role, source_updated_at FROM users WHERE clerk_id = :'p1'", uid) \
            == [[f"r{USER_VERSIONS - 1}", str(t0 + USER_VERSIONS - 1)]]
        wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", timeout=20,
                 what="outbox to drain")
        assert all(rds.hget(f"sess:{s}", "user_id") == uid for s in sessions)
        assert rds.hget(f"user:{uid}", "role") == f"r{USER_VERSIONS - 1}"
    finally:
        assert daemon.stop() == 0
