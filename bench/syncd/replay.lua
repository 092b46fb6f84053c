-- wrk script: replays the pre-signed deliveries written by gen_requests.py,
-- each exactly once. A thread that runs out starts over (its replays are then
-- duplicates, answered without writing); run.sh reports that case.
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local dir = os.getenv("SYNCD_BENCH_DIR")
  local f = assert(io.open(dir .. "/requests." .. id, "rb"))
  local data = f:read("*a")
  f:close()
  reqs = {}
  local pos = 1
  while pos <= #data do
    local nl = data:find("\n", pos, true)
    local len = tonumber(data:sub(pos, nl - 1))
    reqs[#reqs + 1] = data:sub(nl + 1, nl + len)
    pos = nl + len + 1
  end
  next_index = 0
end

function request()
  next_index = next_index + 1
  if next_index > #reqs then
    next_index = 1
  end
  return reqs[next_index]
end
