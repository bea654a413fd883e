-- N Lua states on N threads of one process sharing one pool (max = N), run
-- by lthreads for bench/bench.lua:
--
--   lthreads N threads.lua MODE SECONDS START_AT N
--
-- MODE is "query" (pool:query("select $1::int + 1", 41) per operation),
-- "held" (the same on a connection each thread holds throughout, to tell the
-- pool's share from the rest), "acquire" (pool:acquire():release() per
-- operation), "acquire_hogs" (the same on a pool with track_hogs), "tpcb"
-- (one TPC-B transaction per operation: the five statements of pgbench's
-- built-in tpcb-like script in pool:transaction, on the tables of
-- `pgbench -i`) or "tpcb_cached" (the same on a pool with
-- statement_cache = 100). Every thread opens its
-- connection before START_AT (a CLOCK_MONOTONIC time in seconds, from the
-- driver), so the pool is warm, then all threads run in the same window
-- [START_AT, START_AT + SECONDS] and each prints "ops=<n> secs=<s>
-- cpu=<c>", c being the CPU seconds the whole process used in the window
-- (os.clock counts every thread). The final run (index 0) prints how many
-- connections the pool opened in all.

local index, mode, seconds, start_at, threads = ...
index, seconds, start_at = tonumber(index), tonumber(seconds), tonumber(start_at)
local THREADS = assert(tonumber(threads), "usage: lthreads N threads.lua MODE SECONDS START_AT N")

local uv = require("luv")
local pgpool = require("pgpool")
local hrtime = uv.hrtime
local function now() return hrtime() * 1e-9 end

local pool = pgpool.configure{
  name = "bench", conninfo = assert(os.getenv("BENCH_DSN")), max = THREADS,
  log_level = "error", track_hogs = mode == "acquire_hogs",
  statement_cache = mode == "tpcb_cached" and 100 or nil,
}

if index == 0 then
  local st = pool:stats()
  return string.format("created=%d timeouts=%d", st.created, st.timeouts)
end

local function sleep_until(t)
  local left = t - now()
  if left > 0 then uv.sleep(math.floor(left * 1000)) end
  while now() < t do end            -- the last millisecond
end

-- Warm-up: hold a connection until shortly before the start, so that all
-- THREADS connections are open when the window starts.
local conn = assert(pool:acquire())
assert(conn:query("select 1"))
sleep_until(start_at - 0.2)
if mode ~= "held" then conn:release() end
if now() > start_at - 0.05 then
  error("thread started too late for the common window; raise the start delay")
end
sleep_until(start_at)
local cpu = os.clock()

local stop = start_at + seconds
local ops = 0
if mode == "query" then
  local sql = "select $1::int + 1"
  repeat
    local res = pool:query(sql, 41)
    if res[1]["?column?"] ~= 42 then error("wrong value") end
    ops = ops + 1
  until now() >= stop
elseif mode == "held" then
  local sql = "select $1::int + 1"
  repeat
    local res = conn:query(sql, 41)
    if res[1]["?column?"] ~= 42 then error("wrong value") end
    ops = ops + 1
  until now() >= stop
  conn:release()
elseif mode == "acquire" or mode == "acquire_hogs" then
  repeat
    for _ = 1, 100 do pool:acquire():release() end
    ops = ops + 100
  until now() >= stop
elseif mode == "tpcb" or mode == "tpcb_cached" then
  -- pgbench's tpcb-like script: aid, bid, tid and delta drawn uniformly as
  -- its \set lines do, for the scale `pgbench -i` used.
  local random = math.random
  local scale = assert(pool:query("select count(*)::int as n from pgbench_branches"))[1].n
  local aid, bid, tid, delta
  local function tpcb(c)
    assert(c:query("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", delta, aid))
    local res = assert(c:query("SELECT abalance FROM pgbench_accounts WHERE aid = $1", aid))
    if res[1] == nil then error("no account " .. aid) end
    assert(c:query("UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2", delta, tid))
    assert(c:query("UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2", delta, bid))
    assert(c:query("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)"
      .. " VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)", tid, bid, aid, delta))
  end
  repeat
    aid, bid = random(1, 100000 * scale), random(1, scale)
    tid, delta = random(1, 10 * scale), random(-5000, 5000)
    assert(pool:transaction(tpcb))
    ops = ops + 1
  until now() >= stop
else
  error("threads.lua: unknown mode " .. tostring(mode))
end
return string.format("ops=%d secs=%.6f cpu=%.6f", ops, now() - start_at, os.clock() - cpu)
