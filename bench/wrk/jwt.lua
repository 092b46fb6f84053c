-- wrk script for bench/run.sh's JWT variants: every request carries
-- `Authorization: Bearer <token>`, one of the Clerk-shaped RS256 session
-- tokens that bench/jwt/mint.py wrote, one a line, into the file named by
-- BENCH_JWT_TOKEN_FILE (about 20), picked at random per request.
--
-- As in sessions.lua: the requests are formatted once, in init(), and there
-- is no response() callback (wrk counts non-2xx itself; run.sh fails on them).

local reqs = {}
local n = 0

function init(args)
  local file = os.getenv("BENCH_JWT_TOKEN_FILE")
  local f = file and io.open(file, "r")
  if not f then
    error("BENCH_JWT_TOKEN_FILE does not name a readable token file: " .. tostring(file))
  end
  local path = os.getenv("BENCH_PATH") or "/"
  for line in f:lines() do
    if line ~= "" then
      n = n + 1
      reqs[n] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. line })
    end
  end
  f:close()
  if n == 0 then error("no tokens in " .. file) end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 100000)
end

function request()
  return reqs[math.random(n)]
end
