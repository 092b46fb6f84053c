-- wrk script for `make bench`: every request carries the cookie of a session
-- picked at random among BENCH_SESSIONS seeded ones (sessionId=bench_<n>,
-- n = 1..BENCH_SESSIONS), so that a cache sees many keys rather than one.
-- BENCH_SESSION_PREFIX (default bench_) picks another seeded set.
--
-- The requests are formatted once, in init(); request() only picks one, so
-- that the load generator spends its core on sending, not on Lua.
-- No response() callback: defining one makes wrk parse every response in
-- Lua. wrk counts non-2xx/3xx responses itself; bench/run.sh fails on them.

local reqs = {}
local n = 0

function init(args)
  n = tonumber(os.getenv("BENCH_SESSIONS") or "1000") or 1000
  local path = os.getenv("BENCH_PATH") or "/"
  local prefix = os.getenv("BENCH_SESSION_PREFIX") or "bench_"
  -- a different sequence per wrk thread
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 100000)
  for i = 1, n do
    reqs[i] = wrk.format("GET", path, { ["Cookie"] = "sessionId=" .. prefix .. i })
  end
end

function request()
  return reqs[math.random(n)]
end
