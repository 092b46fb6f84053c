-- wrk script for bench/run.sh's better-auth variants (ba_cache, ba_nocache):
-- every request carries `Cookie: better-auth.session_token=<value>`, one of
-- the signed cookies bench/run.sh wrote, one a line, into the file named by
-- BENCH_BA_COOKIE_FILE (one per seeded session), picked at random per request.
--
-- As in sessions.lua: the requests are formatted once, in init(), and there
-- is no response() callback (wrk counts non-2xx itself; run.sh fails on them).

local reqs = {}
local n = 0

function init(args)
  local file = os.getenv("BENCH_BA_COOKIE_FILE")
  local f = file and io.open(file, "r")
  if not f then
    error("BENCH_BA_COOKIE_FILE does not name a readable cookie file: " .. tostring(file))
  end
  local path = os.getenv("BENCH_PATH") or "/"
  for line in f:lines() do
    if line ~= "" then
      n = n + 1
      reqs[n] = wrk.format("GET", path, { ["Cookie"] = "better-auth.session_token=" .. line })
    end
  end
  f:close()
  if n == 0 then error("no cookies in " .. file) end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 100000)
end

function request()
  return reqs[math.random(n)]
end
