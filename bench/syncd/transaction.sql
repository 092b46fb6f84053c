-- pgbench script: the transaction syncd commits for one session.created
-- (daemon/store.cpp, fresh-insert path), statement for statement, with the
-- same parameters shapes. Run with -M extended, as libpq's PQexecParams.
\set u random(1, 1000)
\set s random(1, 9000000000000000)
\set now 1700000000000
\set expire :now + 604800000
BEGIN;
INSERT INTO webhook_events (id, type, event_timestamp, outcome) VALUES ('msg_pgb_' || :client_id || '_' || :s, 'session.created', :now, 'applied') ON CONFLICT (id) DO NOTHING RETURNING 1;
SELECT pg_advisory_xact_lock_shared(1398361667, hashtext('user_bench_' || :u));
INSERT INTO sessions (id, clerk_user_id, status, expires_at, last_active_at, created_at, updated_at, source_updated_at) VALUES ('sess_pgb_' || :client_id || '_' || :s, 'user_bench_' || :u, CASE WHEN EXISTS (SELECT 1 FROM users WHERE clerk_id = 'user_bench_' || :u AND deleted_at IS NOT NULL) THEN 'ended' ELSE 'active' END, to_timestamp(:expire::bigint / 1000.0), to_timestamp(:now::bigint / 1000.0), to_timestamp(:now::bigint / 1000.0), to_timestamp(:now::bigint / 1000.0), :now) ON CONFLICT (id) DO NOTHING RETURNING status;
INSERT INTO outbox (kind, key, revoke, cascade) VALUES ('session', 'sess_pgb_' || :client_id || '_' || :s, false, false);
COMMIT;
