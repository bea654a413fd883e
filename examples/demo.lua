-- The incident, replayed in plain Lua (no nginx needed):
--
--   1. the broken pattern: every operation opens a new connection and never
--      closes it, until the server answers "sorry, too many clients already";
--   2. the same 1000 operations through pgpool, from 50 luv threads (50 Lua
--      states in one process) sharing one pool of at most 10 connections.
--
--   make demo       runs it against a throwaway server with max_connections = 30
--   PGPOOL_URL=postgresql://user@host/db lua5.4 examples/demo.lua
--
-- Needs the pgpool module on LUA_PATH/LUA_CPATH and lua-luv. The broken
-- pattern uses up the server's connections for a moment (it closes them
-- again before part 2): point it at a server nobody else needs.

local pgpool = require("pgpool")
local uv = require("luv")

local URL = os.getenv("PGPOOL_URL") or os.getenv("PGPOOL_TEST_DSN")   -- nil: libpq's PG* variables
local OPS, THREADS, MAX = 1000, 50, 10

local function say(fmt, ...) io.write(fmt:format(...), "\n") io.flush() end

-- A connection kept for watching the server: taken first, it still works
-- when the server has no slot left. Counts pgpool's other backends.
local monitor_pool = pgpool.configure{ name = "monitor", conninfo = URL, max = 1, log_level = "warn" }
local monitor = assert(monitor_pool:acquire())
local function server_connections()
  local res = assert(monitor:query("select count(*) as n from pg_stat_activity"
    .. " where application_name = 'pgpool' and pid <> pg_backend_pid()"))
  return res[1].n
end
local limit = tonumber(assert(monitor:query("show max_connections"))[1].max_connections)

say("== pgpool demo (plain Lua %s): the incident, replayed", _VERSION:match("[%d.]+"))
say("server: max_connections = %d; workload: %d operations", limit, OPS)
say("")

-- 1. The broken pattern ----------------------------------------------------------

say("-- 1. a new connection per operation, never closed (the incident)")
local leaked, pools = {}, {}
local naive = { ok = 0, failed = 0, too_many = 0, peak = 0 }
local started = uv.hrtime()
for i = 1, OPS do
  -- a fresh pool of one per operation stands for "connect()" in the old code
  local pool = pgpool.configure{ name = "naive-" .. i, conninfo = URL, max = 1, log_level = "off" }
  local conn, msg = pool:acquire()
  if conn and conn:query("select $1::int as id", i) then
    leaked[#leaked + 1], pools[#pools + 1] = conn, pool
    naive.ok = naive.ok + 1
  else
    naive.failed = naive.failed + 1
    if msg and msg:find("too many clients", 1, true) then naive.too_many = naive.too_many + 1 end
    if naive.failed == 1 then
      say("   operation %d failed: %s", i, msg and msg:gsub("^.*FATAL:%s*", "") or "?")
    end
    pool:shutdown()
  end
end
naive.seconds = (uv.hrtime() - started) / 1e9
naive.peak = server_connections()
say("   %d operations got a connection, %d failed; the server is full: %d of %d slots"
  .. " are leaked connections, 1 is this demo's monitor", naive.ok, naive.failed, naive.peak, limit)
say("   (closing the leaked connections: in the incident, only a restart did that)")
for i = 1, #leaked do leaked[i]:discard() end
for i = 1, #pools do pools[i]:shutdown() end
-- the server needs a moment to end those sessions
local deadline = uv.hrtime() + 10e9
while server_connections() > 0 and uv.hrtime() < deadline do uv.sleep(20) end
say("")

-- 2. pgpool ----------------------------------------------------------------------------

say("-- 2. the same work through pgpool: max %d, from %d threads at once", MAX, THREADS)
pgpool.configure{ conninfo = URL, max = MAX, log_level = "warn" }

-- Each thread is a fresh Lua state: require("pgpool") there finds the pool
-- configured above (it is process-wide), so pgpool.query needs no setup.
local function worker(path, cpath, first, count, done)
  package.path, package.cpath = path, cpath
  local pg = require("pgpool")
  local ok, failed, first_error = 0, 0, nil
  for id = first, first + count - 1 do
    local res, msg = pg.query("select $1::int as id from pg_sleep(0.005)", id)
    if res and res[1].id == id then
      ok = ok + 1
    else
      failed = failed + 1
      first_error = first_error or msg or "wrong result"
    end
  end
  done:send(ok, failed, first_error)
end

local pooled = { ok = 0, failed = 0, too_many = 0, peak = 0 }
local reported, threads = 0, {}
local sampler = uv.new_timer()
sampler:start(0, 10, function()
  local n = server_connections()
  if n > pooled.peak then pooled.peak = n end
end)
-- One async handle per thread: libuv may merge several sends on one handle.
local function on_done(handle)
  return function(ok, failed, first_error)
    handle[1]:close()
    -- numbers cross the thread boundary as floats
    pooled.ok, pooled.failed = pooled.ok + math.floor(ok), pooled.failed + math.floor(failed)
    if first_error then
      say("   a thread failed: %s", first_error)
      if first_error:find("too many clients", 1, true) then pooled.too_many = pooled.too_many + 1 end
    end
    reported = reported + 1
    if reported == THREADS then sampler:stop(); sampler:close() end
  end
end
started = uv.hrtime()
local per_thread = OPS // THREADS
for t = 1, THREADS do
  local handle = {}
  handle[1] = uv.new_async(on_done(handle))
  threads[t] = assert(uv.new_thread(worker, package.path, package.cpath,
    (t - 1) * per_thread + 1, per_thread, handle[1]))
end
uv.run()
for t = 1, THREADS do threads[t]:join() end
pooled.seconds = (uv.hrtime() - started) / 1e9
local st = pgpool.stats()
say("   %d operations ok, %d failed in %.2f s; pool: %d connections opened, longest wait %.3f s",
  pooled.ok, pooled.failed, pooled.seconds, st.created, st.wait_time_max)
say("")

-- The table --------------------------------------------------------------------------

local rows = {
  { "operations ok", naive.ok, pooled.ok },
  { "operations failed", naive.failed, pooled.failed },
  { "\"too many clients\" errors", naive.too_many, pooled.too_many },
  { "peak server connections", naive.peak, pooled.peak },
  { "time (s)", ("%.2f"):format(naive.seconds), ("%.2f"):format(pooled.seconds) },
  { "pool: connections opened", "-", st.created },
  { "pool: acquired / timeouts", "-", st.acquired .. " / " .. st.timeouts },
  { "pool: longest wait (ms)", "-", ("%.1f"):format(st.wait_time_max * 1000) },
}
local fmt = "%-28s %-24s %-24s"
say(fmt, "", "new connection per op", ("pgpool (max %d)"):format(MAX))
for _, r in ipairs(rows) do say(fmt, r[1], tostring(r[2]), tostring(r[3])) end
say("")

monitor:release()
pgpool.shutdown_all{ timeout = 5 }
local good = naive.too_many > 0 and pooled.failed == 0 and pooled.peak <= MAX
say(good and "=> the naive pattern ran out of connections; pgpool stayed within %d and failed nothing."
  or "=> unexpected result: see the figures above (expected naive failures, pgpool within %d).", MAX)
os.exit(good and 0 or 1)
