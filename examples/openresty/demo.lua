-- The incident, replayed on OpenResty: the example app (nginx, 2 workers)
-- under `ab -n 1000 -c 50`, first on /naive (a new connection per request,
-- never closed: the code that caused the incident), then on the pooled
-- endpoints. Prints one table side by side.
--
-- Run by `make demo` (examples/demo.sh) against a throwaway server with
-- max_connections = 30; by hand, from the repository root:
--   spec/support/with-pg.sh env LUA_PATH='lua/?.lua;examples/openresty/?.lua;;' \
--     LUA_CPATH='build/lua5.4/?.so;;' lua5.4 examples/openresty/demo.lua

local harness = require("harness")

local URL = os.getenv("PGPOOL_URL") or os.getenv("PGPOOL_TEST_DSN")
local N, C = 1000, 50
local WORKERS, MAX, THREADS = 2, 10, 16

local function say(fmt, ...) io.write(fmt:format(...), "\n") io.flush() end

local ok, missing = harness.available()
if not ok then
  say("-- skipping the OpenResty demo: missing %s", missing)
  say("   (make deps installs nginx-light, libnginx-mod-http-lua, lua-cjson, apache2-utils and curl)")
  os.exit(0)
end
if not URL then
  say("-- skipping the OpenResty demo: set PGPOOL_URL (or run it through make demo)")
  os.exit(0)
end
local cjson = require("cjson.safe")    -- lua-cjson: harness.available() checked it

-- The sampler's connection, taken before the load: it still works when the
-- server has no slot left.
local monitor = harness.monitor(URL)
local limit = tonumber(assert(monitor.query("show max_connections"))[1].max_connections)

say("== pgpool demo (OpenResty): the incident, replayed")
say("server: max_connections = %d; nginx: %d workers, thread_pool of %d threads each,",
  limit, WORKERS, THREADS)
say("pgpool max %d per worker (%d for the server at most); load: ab -n %d -c %d",
  MAX, WORKERS * MAX, N, C)
say("")

local function wait_for_zero()
  for _ = 1, 500 do
    if monitor.count() == 0 then return true end
    os.execute("sleep 0.02")
  end
  return false
end

-- Start the app, run ab on path while sampling the server, read /stats, stop.
local function run(label, path)
  say("-- %s: ab -n %d -c %d %s", label, N, C, path)
  if not wait_for_zero() then say("   (the server still has other pgpool connections)") end
  local srv = harness.start{ url = URL, workers = WORKERS, max = MAX, threads = THREADS }
  local done, r = pcall(srv.ab, srv, path, N, C, monitor.count, 0.01)
  local stats
  if done then
    -- every worker publishes its figures each second (pgpool.nginx): let
    -- the last load in
    os.execute("sleep 1.2")
    local status, body = srv:get("/stats")
    local answer = status == 200 and cjson.decode(body)
    stats = answer and answer.sum
    r.too_many = srv:count_in_log("too many clients already")
  end
  srv:stop()
  if not done then error(r, 0) end
  if not wait_for_zero() then say("   (connections still open after nginx stopped)") end
  if stats then
    r.created, r.pool_peak, r.timeouts, r.wait_max =
      stats.created, stats.peak_total, stats.timeouts, stats.wait_time_max
  end
  say("   %d ok, %d failed (%d \"too many clients\"); server peak %d connections; p50 %s ms, p99 %s ms",
    r.ok, N - r.ok, r.too_many, r.peak, tostring(r.p50), tostring(r.p99))
  return r
end

local results = {
  run("before: /naive, a new connection per request, never closed", "/naive?id=1"),
  run("after: /thread, pgpool through ngx.run_worker_thread", "/thread?id=1"),
  run("after: /health, pgpool called directly", "/health"),
}
monitor.close()
say("")

local function cell(v, fmt)
  if v == nil then return "-" end
  if fmt then return fmt:format(v) end
  -- cjson decodes every number as a float: 20, not 20.0
  if type(v) == "number" and v == math.floor(v) then return ("%d"):format(v) end
  return tostring(v)
end

local rows = {
  { "requests ok", function(r) return r.ok end },
  { "requests failed", function(r) return N - r.ok end },
  { "\"too many clients\" errors", function(r) return r.too_many end },
  { "peak server connections", function(r) return r.peak end },
  { "latency p50 (ms)", function(r) return r.p50 end },
  { "latency p99 (ms)", function(r) return r.p99 end },
  { "requests/s", function(r) return r.rps and ("%.0f"):format(r.rps) end },
  { "pool: connections opened", function(r) return r.created end },
  { "pool: peak open (sampled)", function(r) return r.pool_peak end },
  { "pool: cap (workers x max)", function() return WORKERS * MAX end },
  { "pool: acquire timeouts", function(r) return r.timeouts end },
  { "pool: longest wait (ms)", function(r) return r.wait_max and ("%.1f"):format(r.wait_max * 1000) end },
}
local fmt = "%-28s %-22s %-22s %-22s"
say(fmt, "", "/naive (no pool)", "/thread (pgpool)", "/health (pgpool)")
for _, row in ipairs(rows) do
  local cells = {}
  for i, r in ipairs(results) do
    -- the naive endpoint does not use the pool: its pool rows stay empty
    if i == 1 and row[1]:match("^pool:") then
      cells[i] = "-"
    else
      cells[i] = cell(row[2](r))
    end
  end
  say(fmt, row[1], cells[1], cells[2], cells[3])
end
say("")

local naive, thread, health = results[1], results[2], results[3]
local held = thread.ok == N and health.ok == N and thread.peak <= WORKERS * MAX
  and health.peak <= WORKERS * MAX
if naive.too_many > 0 and held then
  say("=> /naive ran the server out of connections (%d of %d requests failed);", N - naive.ok, N)
  say("   with pgpool every request succeeded and the server never saw more than %d.",
    math.max(thread.peak, health.peak))
  os.exit(0)
end
say("=> unexpected result: see the figures above")
os.exit(1)
