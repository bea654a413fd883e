-- The pgpool OpenResty example: one pool per nginx worker, configured once in
-- the master (init_by_lua), used from request handlers directly (blocking the
-- worker while the query runs) or through ngx.run_worker_thread (the event
-- loop stays free), and closed in exit_worker_by_lua.
--
--   /health        select 1, then pgpool.health() as JSON (503 when critical)
--   /query?id=N    a parameterised query, called directly (blocks the worker)
--   /thread?id=N   the same query in the "pgpool" thread pool
--   /sleep?s=0.2   select pg_sleep($1) in the thread pool (&direct=1: directly)
--   /ping          no database work
--   /listen?channel=jobs&timeout=10   a long poll: one notification (LISTEN in a
--                  worker thread, longpoll.lua) or {"timeout":true}
--   /stats         pgpool.stats() of every worker, and their sum
--   /pgpool/       the dashboard, and /pgpool/data, /pgpool/metrics,
--                  /pgpool/health for every worker (pgpool.nginx)
--   /naive?id=N    the broken pattern, for comparison: a new connection per
--                  request, never closed, until the server runs out of slots
--
-- Environment (pass it with nginx's `env` directive): PGPOOL_URL (conninfo),
-- PGPOOL_MAX (connections per worker, default 10), PGPOOL_MAX_SHARED (a cap
-- for all workers together, default none). Needs lua-cjson.

local pgpool = require("pgpool")
local pgpool_nginx = require("pgpool.nginx")

local ngx = ngx
local tonumber, tostring, ipairs = tonumber, tostring, ipairs
local getenv = os.getenv
local format = string.format

local app = {}

local QUERY = "select $1::int as id, pg_backend_pid() as backend, null::text as note"

-- JSON ------------------------------------------------------------------------

-- lua-cjson: OpenResty bundles its fork; on Debian, apt-get install lua-cjson
-- (its 5.1 build is the one LuaJIT loads). pgpool.null is cjson.null: both
-- are the NULL light userdata, so SQL NULLs come out as JSON null.
local cjson = require("cjson.safe")
-- OpenResty's fork can write an empty table as [] (no rows); the original
-- lua-cjson has no such switch and writes {}.
if cjson.encode_empty_table_as_object then
  cjson.encode_empty_table_as_object(false)
end
local encode_json = cjson.encode

local function reply(status, body)
  ngx.status = status
  ngx.say(encode_json(body))
end

local function fail(status, msg, code)
  ngx.log(ngx.ERR, "pgpool example: ", msg)
  reply(status, { error = msg, code = code })
end

-- A query result as plain JSON-friendly data: the rows, and the command tag.
local function rows_of(res)
  local rows = {}
  for i = 1, #res do rows[i] = res[i] end
  return rows
end

local function id_arg()
  return tonumber(ngx.var.arg_id) or 1
end

-- Phases ------------------------------------------------------------------------

local POOL_OPTIONS = {
  conninfo        = getenv("PGPOOL_URL"),
  max             = tonumber(getenv("PGPOOL_MAX") or "") or 10,
  max_shared      = tonumber(getenv("PGPOOL_MAX_SHARED") or ""),
  acquire_timeout = 5,
  log_level       = "info",
}

-- init_by_lua, in the master. The pool is process-wide C state: the forked
-- workers inherit its configuration and start with no connection, so each
-- worker holds at most `max`; the server sees at most max × worker_processes.
-- The master itself never connects (keep min = 0 here). On a reload (HUP)
-- this runs again in the same master: the shutdown lets changed options
-- take effect (the running workers keep their own copies until they exit).
-- max_shared survives it: the new configuration of the same name finds the
-- cap the old workers still hold tokens of, so old and new workers share it.
function app.init()
  pgpool.shutdown()
  pgpool.configure(POOL_OPTIONS)
end

local LOG_LEVELS = { debug = ngx.DEBUG, info = ngx.NOTICE, warn = ngx.WARN, error = ngx.ERR }

-- peak_total, for /stats: the highest `total` of this worker's pool seen at
-- 0.02 s samples (pgpool's own history samples each second).
local function peak_key(pid)
  return "peak_total:" .. pid
end

local function sample_peak(premature)
  if premature then return end
  local dict, key = ngx.shared.pgpool, peak_key(ngx.worker.pid())
  local total = pgpool.stats().total
  if total > (dict:get(key) or 0) then dict:set(key, total) end
end

-- init_worker_by_lua: pgpool's log lines go to nginx's error log; the
-- worker publishes its pools for /pgpool/* every second (pgpool.nginx) and
-- samples its peak every 0.02 s.
function app.init_worker()
  pgpool.on_log(function(level, message)
    ngx.log(LOG_LEVELS[level] or ngx.NOTICE, message)
  end)
  local ok, err = pgpool_nginx.init_worker{ dict = "pgpool" }
  if not ok then ngx.log(ngx.ERR, "pgpool example: ", err) end
  sample_peak(false)
  ok, err = ngx.timer.every(0.02, sample_peak)
  if not ok then ngx.log(ngx.ERR, "pgpool example: no peak timer: ", err) end
end

local naive_held = {}   -- the connections of the broken pattern (see below)

-- exit_worker_by_lua: wait up to 5 s for queries in flight, close everything.
function app.exit_worker()
  -- The broken pattern's connections are never released, so shutdown would
  -- wait the whole timeout for them: drop them first.
  for i = 1, #naive_held do naive_held[i]:discard() end
  pgpool_nginx.exit_worker()
  ngx.shared.pgpool:delete(peak_key(ngx.worker.pid()))
  local ok, msg = pgpool.shutdown_all{ timeout = 5 }
  if not ok then ngx.log(ngx.WARN, "pgpool example: shutdown: ", msg) end
end

-- Handlers --------------------------------------------------------------------

-- select 1, and this worker's pool health (/pgpool/health has every
-- worker's): 503 when the query fails or the pool is critical.
function app.health()
  local res, msg, code = pgpool.query("select 1 as ok")
  local pool = pgpool.health()
  if not res then
    return reply(503, { database = { connected = false, error = msg, code = code, pool = pool } })
  end
  local critical = pool and pool.status == "critical"
  reply(critical and 503 or 200, { database = { connected = true, pool = pool } })
end

-- Direct call: the worker's event loop waits while the query runs. Fine for
-- short queries; use the thread pool for anything that may take a while.
function app.query()
  local res, msg, code = pgpool.query(QUERY, id_arg())
  if not res then return fail(500, msg, code) end
  reply(200, { via = "direct", worker = ngx.worker.id(), rows = rows_of(res) })
end

-- The thread's VM runs require("pgpool").query(QUERY, id): the same process,
-- hence the same pool. Arguments and results are copied between the VMs.
local function in_thread(sql, ...)
  local ok, res, msg, code = ngx.run_worker_thread("pgpool", "pgpool", "query", sql, ...)
  if not ok then return nil, "run_worker_thread: " .. tostring(res), "thread" end
  return res, msg, code
end

function app.thread()
  local res, msg, code = in_thread(QUERY, id_arg())
  if not res then return fail(500, msg, code) end
  reply(200, { via = "thread", worker = ngx.worker.id(), rows = rows_of(res) })
end

-- /sleep?s=0.2 in a thread; /sleep?s=0.2&direct=1 directly, to show what
-- that does to the worker's other requests.
function app.sleep()
  local seconds = tonumber(ngx.var.arg_s) or 0.2
  local started = ngx.now()
  local sql = "select pg_sleep($1) as slept"
  local res, msg, code
  if ngx.var.arg_direct == "1" then
    res, msg, code = pgpool.query(sql, seconds)
  else
    res, msg, code = in_thread(sql, seconds)
  end
  if not res then return fail(500, msg, code) end
  ngx.update_time()
  reply(200, { slept = seconds, took = ngx.now() - started, worker = ngx.worker.id() })
end

-- /listen?channel=jobs&timeout=10: a long poll, LISTEN in a worker thread
-- (longpoll.lua) until one notification or the timeout (at most 30 s).
function app.listen()
  local channel = ngx.var.arg_channel or "jobs"
  local timeout = math.min(tonumber(ngx.var.arg_timeout) or 10, 30)
  if not (timeout >= 0) then timeout = 10 end
  local ok, got, payload, pid = ngx.run_worker_thread("pgpool", "longpoll", "wait", channel, timeout)
  if not ok then return fail(500, "run_worker_thread: " .. tostring(got), "thread") end
  if not got then
    if pid == "timeout" or payload == "timeout" then return reply(200, { timeout = true }) end
    return fail(500, payload, pid)
  end
  reply(200, { channel = got, payload = payload, pid = pid })
end

function app.ping()
  reply(200, { pong = true, worker = ngx.worker.id() })
end

-- Every worker's figures of the "default" pool (its pgpool.stats(), from the
-- snapshots pgpool.nginx publishes) with its peak_total, and their sum
-- (wait_time_max: the largest).
function app.stats()
  sample_peak(false)
  local snapshots = pgpool_nginx.snapshots()
  local sum = { peak_total = 0 }
  for _, totals in ipairs(pgpool_nginx.totals(snapshots)) do
    if totals.name == "default" then sum = totals end
  end
  sum.peak_total = 0
  local dict, workers = ngx.shared.pgpool, {}
  for _, snapshot in ipairs(snapshots) do
    for _, st in ipairs(snapshot.pools) do
      if st.name == "default" then
        st.history, st.health, st.hogs = nil, nil, nil
        st.peak_total = dict:get(peak_key(snapshot.pid)) or 0
        sum.peak_total = sum.peak_total + st.peak_total
        workers[#workers + 1] = st
      end
    end
  end
  reply(200, { workers = workers, sum = sum })
end

-- The broken pattern --------------------------------------------------------------

-- Every request opens its own connection (a new, uniquely named pool of one)
-- and never closes it: the references kept in naive_held hold them open.
-- This is what ran the server out of connections in the incident; do not
-- copy it.

function app.naive()
  local name = format("naive-%d-%d", ngx.worker.pid(), #naive_held + 1)
  local pool = pgpool.configure{
    name = name, conninfo = POOL_OPTIONS.conninfo, max = 1,
    acquire_timeout = 5, log_level = "off",
  }
  local conn, msg, code = pool:acquire()
  if not conn then
    pool:shutdown()
    return fail(500, msg, code)
  end
  naive_held[#naive_held + 1] = conn
  local res
  res, msg, code = conn:query(QUERY, id_arg())
  if not res then return fail(500, msg, code) end
  reply(200, { via = "naive", worker = ngx.worker.id(), open = #naive_held, rows = rows_of(res) })
end

return app
