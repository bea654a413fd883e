-- One benchmark measurement in one process (Lua 5.4 or LuaJIT), run by
-- bench/bench.lua:
--
--   worker.lua MODE SECONDS [COUNT]
--
-- Connects with the conninfo in BENCH_DSN, sets the method up, warms up, then
-- runs its operation for SECONDS (or exactly COUNT times, without warm-up:
-- for callgrind) and prints one line of key=value pairs:
--
--   ops=<operations> secs=<seconds of the timed loop> cpu=<CPU seconds used in it>
--     peak_rss=<the process's peak resident set size, VmHWM, in kB>
--   na=<reason>                      the feature does not exist (yet)
--
-- The memory modes print their own figures (rss_*, in kB). Every query's
-- value is read back and checked, as an application would.

local mode, seconds, count = ...
seconds, count = tonumber(seconds) or 1, tonumber(count)

local uv = require("luv")
local hrtime = uv.hrtime
local function now() return hrtime() * 1e-9 end

local DSN = assert(os.getenv("BENCH_DSN"), "BENCH_DSN is not set")
local PARAM_SQL = "select $1::int + 1"
local COLUMN = "?column?"

local function say(fmt, ...) io.stdout:write(string.format(fmt, ...), "\n") end

-- pgpool -----------------------------------------------------------------------

local pgpool

local function pool(opts)
  pgpool = pgpool or require("pgpool")
  opts = opts or {}
  opts.conninfo = DSN
  opts.log_level = "error"
  return pgpool.configure(opts)
end

-- A pool and one connection checked out of it for the whole run.
local function held(opts)
  local p = pool(opts)
  return p, assert(p:acquire())
end

local function check(value, expect)
  if value ~= expect then
    error(string.format("wrong value: %s, expected %s", tostring(value), tostring(expect)), 2)
  end
end

-- LuaSQL (Debian's lua-sql-postgres) ------------------------------------------

local luasql_env
local function luasql()
  if not luasql_env then
    local driver = require("luasql.postgres")
    luasql_env = assert(driver.postgres())
  end
  return luasql_env
end

-- execute + fetch + close, as LuaSQL's documentation shows it.
local function luasql_value(con, sql)
  local cur = assert(con:execute(sql))
  local v = cur:fetch()
  cur:close()
  return tonumber(v)
end

-- Methods: each returns the operation (a function), the operations counted
-- per call, and how many calls to make between two clock reads; or nil and
-- a reason when the method cannot run here.

local methods = {}

function methods.held_select1()
  local _, conn = held()
  return function()
    local res = conn:query("select 1")
    check(res[1][COLUMN], 1)
  end, 1, 1
end

function methods.held_param()
  local _, conn = held()
  return function()
    local res = conn:query(PARAM_SQL, 41)
    check(res[1][COLUMN], 42)
  end, 1, 1
end

-- pool:query is acquire + query + release inside the C core.
function methods.pool_query()
  local p = pool{ max = 4 }
  assert(p:query("select 1"))            -- opens the pool's one connection
  return function()
    local res = p:query(PARAM_SQL, 41)
    check(res[1][COLUMN], 42)
  end, 1, 1
end

-- The same, spelled out in Lua the way a handler holding a connection does.
function methods.acquire_query_release()
  local p = pool{ max = 4 }
  assert(p:query("select 1"))
  return function()
    local conn = p:acquire()
    local res = conn:query(PARAM_SQL, 41)
    conn:release()
    check(res[1][COLUMN], 42)
  end, 1, 1
end

-- statement_cache = 100: detected as missing when configure rejects the
-- option, or when the server holds no prepared statement after a query.
function methods.cached_param()
  local ok, p = pcall(pool, { statement_cache = 100, max = 1 })
  if not ok then return nil, "configure rejects statement_cache: " .. tostring(p) end
  local conn = assert(p:acquire())
  assert(conn:query(PARAM_SQL, 41))
  assert(conn:query(PARAM_SQL, 41))
  local res = assert(conn:query("select count(*)::int as n from pg_prepared_statements"))
  if res[1].n == 0 then return nil, "statement_cache accepted but no statement is prepared" end
  return function()
    local r = conn:query(PARAM_SQL, 41)
    check(r[1][COLUMN], 42)
  end, 1, 1
end

-- conn:pipeline(fn): batches of 100 statements in one round trip.
function methods.pipeline_param()
  local _, conn = held()
  if conn.pipeline == nil then return nil, "conn:pipeline does not exist" end
  local function batch(pl)
    for _ = 1, 100 do pl:query(PARAM_SQL, 41) end
  end
  return function()
    assert(conn:pipeline(batch))
  end, 100, 1
end

-- Only the pool: check out and return a connection (pgpool polls the socket
-- once per acquire to see that the connection is still alive).
function methods.acquire_release()
  local p = pool{ max = 4 }
  assert(p:query("select 1"))
  return function()
    p:acquire():release()
  end, 1, 100
end

-- The same with track_hogs: each checkout also names its Lua line in the
-- pool's hogs table and ends its hold there on release.
function methods.acquire_release_hogs()
  local p = pool{ max = 4, track_hogs = true }
  assert(p:query("select 1"))
  return function()
    p:acquire():release()
  end, 1, 100
end

function methods.luasql_select1()
  local con = assert(luasql():connect(DSN))
  return function()
    check(luasql_value(con, "select 1"), 1)
  end, 1, 1
end

-- LuaSQL has no parameters: the value is spliced into the SQL text.
function methods.luasql_sum()
  local con = assert(luasql():connect(DSN))
  local x = 41
  return function()
    check(luasql_value(con, "select " .. x .. " + 1"), 42)
  end, 1, 1
end

-- The broken pattern: a new connection for every operation.
function methods.luasql_connect()
  local env = luasql()
  local x = 41
  return function()
    local con = assert(env:connect(DSN))
    check(luasql_value(con, "select " .. x .. " + 1"), 42)
    con:close()
  end, 1, 1
end

-- The same mistake with pgpool: build the pool, query, shut it down.
function methods.pgpool_connect()
  pool{ name = "once", max = 1 }:shutdown()  -- load the module outside the loop
  return function()
    local p = pool{ name = "once", max = 1 }
    local res = p:query(PARAM_SQL, 41)
    p:shutdown()
    check(res[1][COLUMN], 42)
  end, 1, 1
end

-- Large results: COUNT rows (default 10^6) of (g int, 'x' || g text), each
-- row read as an application would (g summed, the rows counted, the last
-- row's text compared). One call reads the whole result, so these methods
-- run with a COUNT (bench.lua passes it); their figure is the peak RSS.

local function rows_sql(n)
  return string.format("select g, 'x' || g as t from generate_series(1, %d) g", n)
end

local function check_rows(seen, sum, last_t, n)
  check(seen, n)
  check(sum, n * (n + 1) / 2)       -- exact: below 2^53
  check(last_t, "x" .. n)
end

-- conn:rows: one row at a time (single-row mode).
function methods.rows_stream()
  local _, conn = held()
  local n = count or 1000000
  local sql = rows_sql(n)
  return function()
    local seen, sum, last_t = 0, 0, nil
    for row, msg in conn:rows(sql) do
      if not row then error(msg) end
      seen, sum, last_t = seen + 1, sum + row.g, row.t
    end
    check_rows(seen, sum, last_t, n)
  end, n, 1
end

-- conn:query: the whole result as one table.
function methods.rows_query()
  local _, conn = held()
  local n = count or 1000000
  local sql = rows_sql(n)
  return function()
    local res = assert(conn:query(sql))
    local sum = 0
    for i = 1, #res do sum = sum + res[i].g end
    check_rows(#res, sum, res[#res].t, n)
  end, n, 1
end

-- LuaSQL: execute, then cur:fetch() until it returns nil. LuaSQL's
-- PostgreSQL driver runs PQexec, so the whole result is in libpq's memory
-- before the first fetch; its values come back as strings.
function methods.rows_luasql()
  local con = assert(luasql():connect(DSN))
  local n = count or 1000000
  local sql = rows_sql(n)
  return function()
    local cur = assert(con:execute(sql))
    local seen, sum, last_t = 0, 0, nil
    local g, t = cur:fetch()
    while g do
      seen, sum, last_t = seen + 1, sum + tonumber(g), t
      g, t = cur:fetch()
    end
    cur:close()
    check_rows(seen, sum, last_t, n)
  end, n, 1
end

-- Bulk load: COUNT rows (default 10^6) of (g, 'x' || g) into a fresh table,
-- built in Lua as they are sent; the rows the server reports loaded are
-- checked. Each method starts from an empty table.

local BULK_BATCH = 1000          -- rows per COPY chunk, INSERT statement or pipeline

local function bulk_setup()
  local p = pool{ max = 1 }
  assert(p:exec("drop table if exists bench_bulk; create table bench_bulk (g int not null, t text not null)"))
  local n = count or 1000000
  assert(n % BULK_BATCH == 0, "the row count must be a multiple of " .. BULK_BATCH)
  return p, n
end

-- conn:copy_in with a function that returns the next chunk of BULK_BATCH
-- lines (text format), nil at the end.
function methods.bulk_copy_in()
  local p, n = bulk_setup()
  local conn = assert(p:acquire())
  local concat = table.concat
  return function()
    local next_g = 1
    local res = assert(conn:copy_in("copy bench_bulk (g, t) from stdin", function()
      if next_g > n then return nil end
      local lines, k = {}, 0
      for g = next_g, next_g + BULK_BATCH - 1 do
        k = k + 1
        lines[k] = g .. "\tx" .. g .. "\n"
      end
      next_g = next_g + BULK_BATCH
      return concat(lines)
    end))
    check(res.affected, n)
  end, n, 1
end

-- INSERT ... VALUES ($1, $2), ($3, $4), ... with BULK_BATCH rows per
-- statement, all in one pool:transaction.
function methods.bulk_insert_values()
  local p, n = bulk_setup()
  local tuples = {}
  for i = 1, BULK_BATCH do tuples[i] = string.format("($%d, $%d)", 2 * i - 1, 2 * i) end
  local sql = "insert into bench_bulk (g, t) values " .. table.concat(tuples, ", ")
  local params, unpack = {}, table.unpack or unpack
  return function()
    local loaded = assert(p:transaction(function(conn)
      local affected = 0
      for first = 1, n, BULK_BATCH do
        for i = 0, BULK_BATCH - 1 do
          params[2 * i + 1], params[2 * i + 2] = first + i, "x" .. (first + i)
        end
        affected = affected + assert(conn:query(sql, unpack(params, 1, 2 * BULK_BATCH))).affected
      end
      return affected
    end))
    check(loaded, n)
  end, n, 1
end

-- One-row INSERTs, BULK_BATCH to a conn:pipeline (one round trip each),
-- all in one pool:transaction.
function methods.bulk_insert_pipeline()
  local p, n = bulk_setup()
  local sql = "insert into bench_bulk (g, t) values ($1, $2)"
  local first
  local function batch(pl)
    for g = first, first + BULK_BATCH - 1 do pl:query(sql, g, "x" .. g) end
  end
  return function()
    local loaded = assert(p:transaction(function(conn)
      local affected = 0
      for g = 1, n, BULK_BATCH do
        first = g
        local results = assert(conn:pipeline(batch))
        for i = 1, #results do
          if results[i].error then error(results[i].error) end
          affected = affected + results[i].affected
        end
      end
      return affected
    end))
    check(loaded, n)
  end, n, 1
end

-- Timed and counted runs ---------------------------------------------------------

-- Both return the operations run, the seconds taken and the CPU seconds
-- (user + system, os.clock) this process used meanwhile.
local function run_for(op, per_call, calls_per_check, secs)
  local ops, started, cpu = 0, now(), os.clock()
  local stop = started + secs
  repeat
    for _ = 1, calls_per_check do op() end
    ops = ops + per_call * calls_per_check
  until now() >= stop
  return ops, now() - started, os.clock() - cpu
end

local function run_count(op, per_call, n)
  local started, cpu = now(), os.clock()
  for _ = 1, math.ceil(n / per_call) do op() end
  return n, now() - started, os.clock() - cpu
end

-- Memory ---------------------------------------------------------------------------

-- Resident set size of this process in kB; with `collect`, after a full
-- garbage collection, so that garbage not yet collected does not count.
local function rss_kb(collect)
  if collect then
    collectgarbage("collect")
    collectgarbage("collect")
  end
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

-- The peak resident set size of this process so far (VmHWM), in kB.
local function peak_rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmHWM:%s*(%d+)"))
end

local memory = {}

-- RSS with 20 idle pooled connections: all 20 checked out at once (so 20
-- are opened), then returned.
function memory.rss_idle20()
  local p = pool{ max = 20 }
  local before = rss_kb(true)
  local conns = {}
  for i = 1, 20 do conns[i] = assert(p:acquire()) end
  for i = 1, 20 do conns[i]:release() end
  conns = nil
  local after = rss_kb(true)
  local st = p:stats()
  say("rss_before=%d rss_after=%d idle=%d", before, after, st.idle)
end

-- The same 20 connections opened with LuaSQL, for comparison.
function memory.luasql_idle20()
  local env = luasql()
  local before = rss_kb(true)
  local conns = {}
  for i = 1, 20 do conns[i] = assert(env:connect(DSN)) end
  local after = rss_kb(true)
  say("rss_before=%d rss_after=%d idle=%d", before, after, #conns)
  for i = 1, 20 do conns[i]:close() end
end

-- RSS after `warm` warm-up operations and after `warm * 10` more, each time
-- after a full collection; in between it is sampled every `warm` operations
-- without forcing a collection. (Forcing one every sample would itself grow
-- the heap: Lua 5.4 then lets garbage with finalizers, such as released
-- connection handles, pile up further before each cycle.)
local function growth(op, warm)
  for _ = 1, warm do op() end
  local first = rss_kb(true)
  local samples = {}
  local started = now()
  for s = 1, 10 do
    for _ = 1, warm do op() end
    samples[s] = rss_kb(false)
  end
  local secs = now() - started
  say("rss_start=%d rss_end=%d ops=%d secs=%.3f lua_kb=%d samples=%s",
    first, rss_kb(true), warm * 10, secs,
    math.floor(collectgarbage("count")), table.concat(samples, ","))
end

-- 100k warm-up then 1M `select 1` on a held connection (count = 100000).
function memory.rss_queries()
  local _, conn = held()
  growth(function()
    local res = conn:query("select 1")
    check(res[1][COLUMN], 1)
  end, count or 100000)
end

-- The same for acquire + release pairs.
function memory.rss_acquire()
  local p = pool{ max = 4 }
  assert(p:query("select 1"))
  growth(function() p:acquire():release() end, count or 100000)
end

-- Main -----------------------------------------------------------------------------

if memory[mode] then
  memory[mode]()
  os.exit(0)
end

local setup = methods[mode] or error("worker.lua: unknown mode " .. tostring(mode))
local op, per_call, calls_per_check = setup()
if not op then
  say("na=%s", (per_call:gsub("%s", "_")))
  os.exit(0)
end

local ops, secs, cpu
if count then
  ops, secs, cpu = run_count(op, per_call, count)
else
  run_for(op, per_call, calls_per_check, math.min(0.2, seconds / 5))   -- warm-up (and LuaJIT traces)
  ops, secs, cpu = run_for(op, per_call, calls_per_check, seconds)
end
say("ops=%d secs=%.6f cpu=%.6f peak_rss=%d", ops, secs, cpu, peak_rss_kb())
os.exit(0)
