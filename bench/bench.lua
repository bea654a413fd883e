-- The side-by-side benchmark driver (Lua 5.4), started by bench/run.sh
-- against one throwaway server (spec/support/with-pg.sh).
--
-- Every measurement runs in a fresh process: build/rawpq (libpq from C),
-- bench/worker.lua under lua5.4 or luajit (pgpool, LuaSQL), build/*/lthreads
-- with bench/threads.lua (8 Lua states through one pool), or pgbench. The
-- throughput methods run ROUNDS times, interleaved: each round runs every
-- method once for SECONDS, odd rounds in list order and even rounds in
-- reverse, so the slow drift of a shared machine favours no method. Medians,
-- min/max and ratios of medians are printed; then instruction counts
-- (callgrind), memory, and the table of targets with PASS / MISS, where a
-- ratio is the median of the per-round ratios of two methods that ran close
-- together in time.
--
-- Placement (see bench/RESULTS.md for why): single-connection methods run
-- with the client and the whole server pinned to the same CPU; the "split"
-- rows put them on two CPUs for comparison; the concurrency methods run
-- unpinned on every CPU.
--
-- Then what a PostgreSQL user expects of a driver, in the same rounds but
-- only the first DRIVER_ROUNDS of them (each run is longer): streaming 10^6
-- rows (conn:rows, conn:query, LuaSQL's cursor; rows/s and each process's
-- peak RSS), bulk loading (COPY, INSERT ... VALUES of 1000 rows, pipelined
-- INSERTs), TPC-B from 8 threads through pool:transaction against pgbench's
-- built-in tpcb-like script, and the OpenResty example under wrk (a direct
-- call against ngx.run_worker_thread). These run unpinned.
--
-- Environment: BENCH_QUICK=1 (one short round, for development), BENCH_ROUNDS,
-- BENCH_SECONDS, BENCH_DRIVER_ROUNDS (default 3; 1 quick), BENCH_CPU (the
-- CPU for pinned runs; default the last one), BENCH_TRANSPORT=unix|tcp
-- (default unix), BENCH_ONLY (Lua patterns, comma-separated: only the
-- methods and callgrind programs whose id matches one, no memory figures,
-- and only the targets they measure; e.g. BENCH_ONLY=acquire for the pool
-- rows, track_hogs off and on; rows, bulk, tpcb and nginx for the driver
-- parts: BENCH_ONLY=rows,bulk), and the PGPOOL_TEST_* variables of
-- with-pg.sh.

local uv = require("luv")

local function now() return uv.hrtime() * 1e-9 end
local format, concat = string.format, table.concat

local QUICK = (os.getenv("BENCH_QUICK") or "") ~= "" and os.getenv("BENCH_QUICK") ~= "0"
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or (QUICK and 1 or 7)
local SECONDS = tonumber(os.getenv("BENCH_SECONDS")) or (QUICK and 0.3 or 1.0)
-- pgbench -T takes whole seconds; the thread methods use the same window.
local THREAD_SECONDS = math.max(1, math.floor(SECONDS + 0.5))
local THREADS = 8
local ONLY = os.getenv("BENCH_ONLY") ~= "" and os.getenv("BENCH_ONLY") or nil
-- The driver parts: rounds, rows, and seconds per run.
local DRIVER_ROUNDS = math.min(ROUNDS, tonumber(os.getenv("BENCH_DRIVER_ROUNDS")) or (QUICK and 1 or 3))
local NGINX_ROUNDS = math.min(DRIVER_ROUNDS, 2)    -- 4 runs of WRK_SECONDS a round
local STREAM_ROWS = 1000000                        -- and a tenth of it, for the memory
local BULK_ROWS = QUICK and 100000 or 1000000
local PIPELINE_ROWS = BULK_ROWS // 5               -- 10^6 one-row INSERTs take ~9 s here
local TPCB_SECONDS = QUICK and 1 or 3
local WRK_SECONDS = QUICK and 2 or 10
local WRK_CONNECTIONS = 50
local NGINX = { workers = 2, max = 8, threads = 8 }
local MEM_WARM = QUICK and 10000 or 100000         -- then 10x that measured
local CG_SMALL, CG_LARGE = 2000, 12000             -- callgrind: difference / 10000
if QUICK then CG_SMALL, CG_LARGE = 500, 2500 end

local function env(name)
  local v = os.getenv(name)
  if not v or v == "" then error(name .. " is not set: run via bench/run.sh", 0) end
  return v
end

local TRANSPORT = os.getenv("BENCH_TRANSPORT") or "unix"
local DSN = TRANSPORT == "tcp" and env("PGPOOL_TEST_TCP_DSN") or env("PGPOOL_TEST_DSN")
local PGDATA = env("PGPOOL_TEST_DIR") .. "/data"
local OUT_DIR = "bench/out"

-- Output goes to the terminal and to bench/out/last-run.txt.
os.execute("mkdir -p " .. OUT_DIR)
local transcript = assert(io.open(OUT_DIR .. "/last-run.txt", "w"))
local function say(fmt, ...)
  local line = select("#", ...) > 0 and format(fmt, ...) or fmt
  io.stdout:write(line, "\n")
  io.stdout:flush()
  transcript:write(line, "\n")
  transcript:flush()
end

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Run a shell command; returns its output (stdout and stderr) and success.
local function capture(cmd)
  local f = assert(io.popen(cmd .. " 2>&1"))
  local out = f:read("a")
  local ok = f:close()
  return out, ok
end

local function first_line(cmd)
  return ((capture(cmd)):match("[^\n]*"))
end

-- CPUs --------------------------------------------------------------------------

local NCPU = tonumber(first_line("nproc")) or 1
local CPU = tonumber(os.getenv("BENCH_CPU")) or (NCPU - 1)
local OTHER_CPU = CPU == 0 and math.min(1, NCPU - 1) or 0
local ALL_CPUS = "0-" .. (NCPU - 1)

-- Pin the postmaster and all its processes to `cpus`; backends forked later
-- inherit the postmaster's mask. Skipped when already so.
local server_cpus
local function pin_server(cpus)
  if cpus == server_cpus then return end
  local pid = first_line("head -n 1 " .. sh_quote(PGDATA .. "/postmaster.pid"))
  assert(pid:match("^%d+$"), "no postmaster.pid in " .. PGDATA)
  local out, ok = capture(format(
    "for p in %s $(ps -o pid= --ppid %s); do taskset -apc %s $p >/dev/null || exit 1; done",
    pid, pid, cpus))
  if not ok then error("taskset failed: " .. out, 0) end
  server_cpus = cpus
end

-- Placement of a method: client CPU prefix and server CPUs.
local PLACEMENT = {
  same  = { client = "taskset -c " .. CPU .. " ", server = tostring(CPU) },
  split = { client = "taskset -c " .. OTHER_CPU .. " ", server = tostring(CPU) },
  free  = { client = "", server = ALL_CPUS },
}

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) / 2] end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

-- 12345678 -> "12,345,678"
local function thousands(n)
  local s = format("%.0f", n)
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end

-- Commands -------------------------------------------------------------------------

-- A command is built by a function of the run's seconds that returns the
-- environment assignments and the program with its arguments, so that the
-- assignments can go in front of taskset or valgrind.
local function lua_env(rt)
  return format("BENCH_DSN=%s LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/%s/?.so;;' ",
    sh_quote(DSN), rt)
end

local function raw_cmd(mode, count)
  return function(secs)
    return "", format("build/rawpq %s %s %s %s", sh_quote(DSN), mode, secs, count or "")
  end
end

local function worker_cmd(rt, mode, count)
  return function(secs)
    return lua_env(rt), format("%s bench/worker.lua %s %s %s", rt, mode, secs, count or "")
  end
end

local function threads_cmd(rt, mode)
  return function(secs)
    local start_at = now() + 0.6     -- time to start the process and open 8 connections
    return lua_env(rt), format("build/%s/lthreads %d bench/threads.lua %s %s %.6f %d",
      rt, THREADS, mode, secs, start_at, THREADS)
  end
end

-- script: pgbench's arguments naming the script (default: bench/pgbench_param.sql).
local function pgbench_cmd(protocol, script)
  return function(secs)
    return "", format("/usr/bin/time -f 'cpu_user=%%U cpu_sys=%%S' "
      .. "pgbench -n -c %d -j 2 -T %d -M %s %s %s",
      THREADS, secs, protocol, script or "-f bench/pgbench_param.sql", sh_quote(DSN))
  end
end

-- wrk against the OpenResty example (its URL known once it runs).
local nginx_url
local function wrk_cmd(path)
  return function(secs)
    return "", format("wrk -t 2 -c %d -d %ds --latency %s", WRK_CONNECTIONS, secs,
      sh_quote((nginx_url or "http://127.0.0.1:1") .. path))
  end
end

-- The command line of cmd, run with `prefix` (taskset, valgrind) in front.
local function command(cmd, secs, prefix)
  local env_part, program = cmd(secs)
  return env_part .. (prefix or "") .. program
end

-- Parsers: output -> operations per second, the client's CPU seconds per
-- operation and a figure of the section's extra column (peak RSS in kB,
-- p99 latency in ms); or nil, a message and whether the feature is missing.
local function parse_ops(out)
  local na = out:match("na=(%S+)")
  if na then return nil, "n/a (not implemented: " .. na:gsub("_", " ") .. ")", true end
  local ops, secs, cpu = out:match("ops=(%d+) secs=([%d.]+) cpu=([%d.]+)")
  if not ops then return nil, "failed: " .. out:gsub("\n", " | "):sub(1, 300) end
  return tonumber(ops) / tonumber(secs), nil, nil, tonumber(cpu) / tonumber(ops),
    tonumber(out:match("peak_rss=(%d+)"))
end

-- wrk --latency: requests/s and the 99th percentile; a run with any
-- non-2xx answer or socket error counts as failed.
local WRK_UNIT_MS = { us = 0.001, ms = 1, s = 1000, m = 60000 }
local function parse_wrk(out, server_cpu)
  local rps = tonumber(out:match("Requests/sec:%s*([%d.]+)"))
  local requests = tonumber(out:match("(%d+) requests in"))
  local p99, unit = out:match("\n%s*99%%%s+([%d.]+)(%a+)")
  if not (rps and p99 and WRK_UNIT_MS[unit]) then return nil, "failed: " .. out:gsub("\n", " | "):sub(1, 300) end
  local bad = out:match("Non%-2xx or 3xx responses:%s*(%d+)")
  if bad then return nil, "failed: " .. bad .. " non-2xx answers" end
  local errors = out:match("Socket errors:%s*([^\n]+)")
  if errors then return nil, "failed: socket errors: " .. errors end
  return rps, nil, nil, server_cpu and requests and server_cpu / requests, tonumber(p99) * WRK_UNIT_MS[unit]
end

-- lthreads: the threads' rates add up; each thread reports the process's CPU
-- time over the common window, of which the median is taken.
local function parse_threads(out)
  local total, ops_total, cpus = 0, 0, {}
  for i, ops, secs, cpu in out:gmatch("(%d+): ops=(%d+) secs=([%d.]+) cpu=([%d.]+)") do
    if i ~= "0" then
      total = total + tonumber(ops) / tonumber(secs)
      ops_total = ops_total + tonumber(ops)
      cpus[#cpus + 1] = tonumber(cpu)
    end
  end
  if #cpus ~= THREADS then return nil, "failed: " .. out:gsub("\n", " | "):sub(1, 300) end
  local created = tonumber(out:match("created=(%d+)"))
  if created and created > THREADS then return nil, "pool opened more than max connections" end
  return total, nil, nil, median(cpus) / ops_total
end

-- pgbench, run under /usr/bin/time for its CPU time (its 8 connections
-- included).
local function parse_pgbench(out)
  local tps = out:match("tps = ([%d.]+)")
  local done = out:match("actually processed: (%d+)")
  local user, sys = out:match("cpu_user=([%d.]+) cpu_sys=([%d.]+)")
  if not (tps and done and user) then return nil, "failed: " .. out:gsub("\n", " | "):sub(1, 300) end
  return tonumber(tps), nil, nil, (tonumber(user) + tonumber(sys)) / tonumber(done)
end

-- Methods ---------------------------------------------------------------------------
--
-- Defined in the order they run in a round, so that the methods a target
-- compares run next to each other; each section of the report lists its
-- methods in this order too.

local methods, by_id = {}, {}
local function method(m)
  m.parse = m.parse or parse_ops
  m.place = m.place or "same"
  m.samples = {}      -- rates in the order measured
  m.cpu = {}          -- client CPU seconds per operation, likewise
  m.by_round = {}     -- round -> rate, for paired ratios
  m.extra = {}        -- the section's extra figure (peak RSS, p99), likewise
  methods[#methods + 1] = m
  by_id[m.id] = m
end

local RUNTIMES = { "lua5.4", "luajit" }

local function raw(id, label, mode, place, section)
  method{ id = id, section = section or "single", place = place, label = "raw libpq  " .. label, cmd = raw_cmd(mode) }
end

-- A worker method on each runtime in RUNTIMES (id suffixed with the runtime),
-- or on the runtimes given (id as is).
local function lua(id, label, mode, runtimes, place, section)
  for _, rt in ipairs(runtimes or RUNTIMES) do
    method{ id = runtimes and id or id .. "_" .. rt, section = section or "single", place = place,
      label = format("%-9s %s", rt, label), cmd = worker_cmd(rt, mode) }
  end
end

-- 1., 2. and 4.: raw libpq, pgpool and LuaSQL on one connection, one query
-- after the other.
raw("raw_simple", "PQexec select 1 (simple protocol)", "simple")
raw("raw_select1", "PQexecParams select 1", "select1")
lua("held_select1", "pgpool held conn select 1", "held_select1")
lua("luasql_select1", "LuaSQL held conn select 1", "luasql_select1")
raw("raw_param", "PQexecParams select $1::int + 1", "param")
lua("held_param", "pgpool held conn select $1::int + 1", "held_param")
lua("luasql_sum", "LuaSQL held conn \"select \"..41..\" + 1\"", "luasql_sum")
raw("raw_prepared", "PQexecPrepared select $1::int + 1", "prepared")
lua("cached_param", "pgpool statement_cache=100 select $1", "cached_param")
lua("pool_query", "pgpool pool:query (acquire+query+release)", "pool_query")
lua("aqr", "pgpool acquire, conn:query, release", "acquire_query_release")

-- 3. The broken pattern: connect + query + close per operation.
lua("luasql_connect", "LuaSQL connect + query + close", "luasql_connect", { "lua5.4" }, nil, "connect")
lua("pgpool_connect", "pgpool configure + query + shutdown", "pgpool_connect", { "lua5.4" }, nil, "connect")

-- Pipelines: 100 statements per round trip.
raw("raw_pipe_select1", "pipeline x100 select 1", "pipe_select1")
raw("raw_pipe_param", "pipeline x100 select $1::int + 1", "pipe_param")
lua("pipeline_param", "pgpool conn:pipeline x100 select $1", "pipeline_param")

-- The same with client and server on two CPUs, for comparison.
raw("raw_param_split", "PQexecParams select $1::int + 1", "param", "split", "split")
lua("held_param_split", "pgpool held conn select $1::int + 1", "held_param", { "lua5.4" }, "split", "split")
raw("raw_pipe_param_split", "pipeline x100 select $1::int + 1", "pipe_param", "split", "split")
lua("pipeline_param_split", "pgpool conn:pipeline x100 select $1", "pipeline_param", { "lua5.4" }, "split", "split")

-- 6. The pool itself (the server is not involved).
lua("acquire", "pool:acquire():release(), 1 thread", "acquire_release", nil, nil, "pool")
lua("acquire_hogs", "same, track_hogs = true", "acquire_release_hogs", nil, nil, "pool")
method{ id = "acquire_threads", section = "pool", place = "free", parse = parse_threads, threads = true,
  label = format("lua5.4    pool:acquire():release(), %d threads", THREADS), cmd = threads_cmd("lua5.4", "acquire") }
method{ id = "acquire_threads_hogs", section = "pool", place = "free", parse = parse_threads, threads = true,
  label = format("lua5.4    same, %d threads, track_hogs = true", THREADS), cmd = threads_cmd("lua5.4", "acquire_hogs") }

-- 5. Concurrency: 8 Lua states through one pool against pgbench -c 8.
local function threads(rt)
  method{ id = "threads_" .. rt, section = "threads", place = "free", parse = parse_threads, threads = true,
    label = format("%-9s pgpool %d threads, pool:query select $1", rt, THREADS), cmd = threads_cmd(rt, "query") }
end
local function pgbench(protocol, label)
  method{ id = "pgbench_" .. protocol, section = "threads", place = "free", parse = parse_pgbench, threads = true,
    label = format("pgbench -c %d -j 2 -M %s", THREADS, label), cmd = pgbench_cmd(protocol) }
end
threads("lua5.4")
pgbench("extended", "extended (unnamed statements)")
threads("luajit")
method{ id = "threads_held", section = "threads", place = "free", parse = parse_threads, threads = true,
  label = format("lua5.4    pgpool %d threads, each holding a conn", THREADS), cmd = threads_cmd("lua5.4", "held") }
pgbench("prepared", "prepared")

-- The driver parts. A method's `rounds` bounds the rounds it runs in; its
-- `group`, when set, is started before the first of its methods in a round
-- and stopped after the last (see enter_group); its `ref` is what its ratio
-- column compares it with, instead of the section's.

-- Streaming rows: a fresh process per read of the whole result.
local function rows(id, label, mode, count)
  method{ id = id, section = "rows", place = "free", rounds = DRIVER_ROUNDS, label = label,
    cmd = worker_cmd("lua5.4", mode, count) }
end
rows("rows_stream_1e5", "lua5.4    for row in conn:rows(sql), 10^5 rows", "rows_stream", STREAM_ROWS // 10)
rows("rows_stream", "lua5.4    for row in conn:rows(sql), 10^6 rows", "rows_stream", STREAM_ROWS)
rows("rows_query", "lua5.4    conn:query(sql), 10^6 rows", "rows_query", STREAM_ROWS)
rows("rows_luasql", "lua5.4    LuaSQL cur:fetch() loop, 10^6 rows", "rows_luasql", STREAM_ROWS)

-- Bulk load into a fresh table.
local function bulk(id, label, mode, count)
  method{ id = id, section = "bulk", place = "free", rounds = DRIVER_ROUNDS, label = label,
    cmd = worker_cmd("lua5.4", mode, count) }
end
bulk("bulk_copy_in", format("lua5.4    conn:copy_in, %s rows", thousands(BULK_ROWS)), "bulk_copy_in", BULK_ROWS)
bulk("bulk_insert_values", format("lua5.4    INSERT VALUES x1000, one tx, %s", thousands(BULK_ROWS)),
  "bulk_insert_values", BULK_ROWS)
bulk("bulk_insert_pipeline", format("lua5.4    INSERT, pipelines of 1000, one tx, %s", thousands(PIPELINE_ROWS)),
  "bulk_insert_pipeline", PIPELINE_ROWS)

-- TPC-B on the tables of `pgbench -i -s 1`, made once.
local tpcb_group = { name = "pgbench -i" }
function tpcb_group.start()
  if tpcb_group.ready then return end
  local out, ok = capture(format("pgbench -i -s 1 -q %s", sh_quote(DSN)))
  if not ok then error("pgbench -i failed: " .. out:gsub("\n", " | "):sub(1, 300), 0) end
  tpcb_group.ready = true
end
local function tpcb(id, label, cmd, parse, ref)
  method{ id = id, section = "tpcb", place = "free", rounds = DRIVER_ROUNDS, secs = TPCB_SECONDS,
    group = tpcb_group, parse = parse, threads = true, ref = ref, label = label, cmd = cmd }
end
tpcb("tpcb_threads", format("lua5.4    %d threads, pool:transaction", THREADS),
  threads_cmd("lua5.4", "tpcb"), parse_threads)
tpcb("tpcb_pgbench_extended", format("pgbench -c %d -j 2 -M extended", THREADS),
  pgbench_cmd("extended", "-b tpcb-like"), parse_pgbench)
tpcb("tpcb_threads_cached", format("lua5.4    %d threads, statement_cache = 100", THREADS),
  threads_cmd("lua5.4", "tpcb_cached"), parse_threads, "tpcb_pgbench_prepared")
tpcb("tpcb_pgbench_prepared", format("pgbench -c %d -j 2 -M prepared", THREADS),
  pgbench_cmd("prepared", "-b tpcb-like"), parse_pgbench)

-- The OpenResty example (examples/openresty, through its harness): started
-- for the methods of a round, then stopped; its pools are warmed by one
-- second of load on each way in before the first run.
local nginx_group = { name = "nginx" }
function nginx_group.start()
  local harness = dofile("examples/openresty/harness.lua")
  nginx_group.server = harness.start{ url = DSN, workers = NGINX.workers, max = NGINX.max,
    threads = NGINX.threads }
  nginx_url = nginx_group.server.url
  for _, path in ipairs{ "/thread?id=1", "/query?id=1" } do capture(command(wrk_cmd(path), 1)) end
end
-- CPU seconds (user + system) the nginx workers have used so far, their
-- thread pools included: the cpu column of the nginx rows is theirs.
local CLK_TCK = tonumber(first_line("getconf CLK_TCK")) or 100
function nginx_group.cpu()
  local ticks = 0
  for pid in pairs(nginx_group.server:worker_pids()) do
    local f = io.open("/proc/" .. pid .. "/stat")
    if f then
      local stat = f:read("a")
      f:close()
      -- fields 14 and 15 (utime, stime), counted after the ")" that ends the name
      local utime, stime = stat:match("%)%s+%S+" .. ("%s+%S+"):rep(10) .. "%s+(%d+)%s+(%d+)")
      ticks = ticks + (tonumber(utime) or 0) + (tonumber(stime) or 0)
    end
  end
  return ticks / CLK_TCK
end
function nginx_group.stop()
  if nginx_group.server then nginx_group.server:stop() end
  nginx_group.server, nginx_url = nil, nil
end
local function nginx(id, label, path, ref)
  method{ id = id, section = "nginx", place = "free", rounds = NGINX_ROUNDS, secs = WRK_SECONDS,
    group = nginx_group, parse = parse_wrk, ref = ref, label = label, cmd = wrk_cmd(path),
    probe = nginx_group.cpu }
end
nginx("nginx_query", "/query: select, direct call", "/query?id=1")
nginx("nginx_thread", "/thread: the same in ngx.run_worker_thread", "/thread?id=1")
nginx("nginx_sleep_direct", "/sleep?s=0.002&direct=1: pg_sleep 2 ms, direct", "/sleep?s=0.002&direct=1",
  "nginx_sleep_direct")
nginx("nginx_sleep_thread", "/sleep?s=0.002: the same in a worker thread", "/sleep?s=0.002",
  "nginx_sleep_direct")

-- BENCH_ONLY: the methods whose id matches one of its patterns (by_id
-- keeps them all, so that the targets of the others find no result and are
-- left out).
local function selected(id)
  for pattern in ONLY:gmatch("[^,]+") do
    if id:match(pattern) then return true end
  end
  return false
end

if ONLY then
  local kept = {}
  for _, m in ipairs(methods) do
    if selected(m.id) then kept[#kept + 1] = m end
  end
  methods = kept
end

-- Running ------------------------------------------------------------------------------

-- The group whose methods run now (its start succeeded or failed), and
-- entering another: the open one is stopped, the new one started. A group
-- that failed to start fails its methods' runs with its error.
local open_group
local function enter_group(g)
  if g == open_group then return end
  if open_group and open_group.stop then
    local ok, err = pcall(open_group.stop)
    if not ok then io.stderr:write("bench: stopping ", open_group.name, ": ", tostring(err), "\n") end
  end
  open_group = g
  if g then
    local ok, err = pcall(g.start)
    g.failed = not ok and format("%s did not start: %s", g.name, tostring(err)):gsub("\n", " | ") or nil
  end
end

local function run_method(m, round)
  enter_group(m.group)
  if m.group and m.group.failed then
    m.errors, m.last_error = (m.errors or 0) + 1, m.group.failed
    return
  end
  local p = PLACEMENT[m.place]
  pin_server(p.server)
  local secs = m.secs or (m.threads and THREAD_SECONDS or SECONDS)
  local probed = m.probe and m.probe()
  local out = capture(command(m.cmd, secs, p.client))
  local rate, err, na, cpu, extra = m.parse(out, probed and m.probe() - probed)
  if rate then
    m.samples[#m.samples + 1] = rate
    m.cpu[#m.cpu + 1] = cpu
    m.extra[#m.extra + 1] = extra
    if round then m.by_round[round] = rate end
  elseif na then
    m.na = err
  else
    m.errors = (m.errors or 0) + 1
    m.last_error = err
  end
end

local function stats(m)
  if #m.samples == 0 then return nil end
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(m.samples) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return median(m.samples), lo, hi
end

local function rate_of(id) return (stats(by_id[id])) end

local function ratio_text(a, b)
  if not a or not b then return "" end
  return format("%.2fx", a / b)
end

-- Environment -------------------------------------------------------------------------

local function machine()
  local cpu = first_line("grep -m1 'model name' /proc/cpuinfo"):gsub("^model name%s*:%s*", "")
  say("machine   : %d CPUs, %s, kernel %s, %s", NCPU, cpu, first_line("uname -r"),
    first_line("free -g | awk '/Mem:/ {print $2 \" GB RAM\"}'"))
  say("server    : %s (throwaway, fsync off), over %s socket",
    first_line(format("psql %s -XAtc 'select version()'", sh_quote(DSN))):match("^(PostgreSQL [%d.]+)") or "?",
    TRANSPORT == "tcp" and "TCP (127.0.0.1)" or "Unix")
  say("clients   : %s, %s, libpq %s, %s, %s", first_line("lua5.4 -v"):match("^Lua [%d.]+"),
    first_line("luajit -v"):match("^LuaJIT %S+"), first_line("pg_config --version"):gsub("PostgreSQL ", ""),
    first_line("lua5.4 -e 'print(require(\"luasql.postgres\")._VERSION)'"),
    first_line("pgbench --version"))
  say("http      : %s with lua-nginx-module (examples/openresty), %s", first_line("nginx -v"):gsub("^nginx version: ", ""),
    (first_line("wrk --version"):match("^wrk %S+") or "wrk ?"))
  say("placement : single-connection rows: client and server on CPU %d; split rows: client CPU %d, "
    .. "server CPU %d; threads: unpinned", CPU, OTHER_CPU, CPU)
  say("load      : %s(at start)", first_line("cat /proc/loadavg"):match("^(%S+ %S+ %S+ )"))
end

-- Sections of the throughput report ---------------------------------------------------------

local SECTIONS = {
  { "single", "one connection, client and server on the same CPU (queries/s)", "raw_param" },
  { "split", "one connection, client and server on two CPUs (queries/s)", "raw_param_split" },
  { "connect", "connect per operation (operations/s)", "luasql_connect" },
  { "pool", "the pool itself (acquire + release pairs/s)", nil },
  { "threads", format("%d clients in parallel, unpinned (queries/s)", THREADS), "pgbench_extended" },
  { "rows", "streaming a result, one connection, unpinned (rows/s; peak RSS of the process)", "rows_query",
    extra = "peak RSS", scale = 1 / 1024, unit = "MB" },
  { "bulk", "bulk load into a fresh table, one connection, unpinned (rows/s)", "bulk_insert_values" },
  { "tpcb", format("TPC-B (pgbench -i -s 1), %d clients, unpinned, %d s per run (transactions/s)",
    THREADS, TPCB_SECONDS), "tpcb_pgbench_extended" },
  { "nginx", format("OpenResty, %d workers, max %d and %d threads each; wrk -c %d, %d s per run (requests/s)",
    NGINX.workers, NGINX.max, NGINX.threads, WRK_CONNECTIONS, WRK_SECONDS), "nginx_query",
    extra = "p99", scale = 1, unit = "ms" },
}

-- The extra column of a section (peak RSS, p99): median and range.
local function extra_text(section, m)
  if #m.extra == 0 then return "" end
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(m.extra) do lo, hi = math.min(lo, v), math.max(hi, v) end
  local k, fmt = section.scale, section.scale < 1 and "%.1f" or "%.2f"
  local text = format(fmt .. " %s", median(m.extra) * k, section.unit)
  if hi > lo then text = text .. format(" (" .. fmt .. "-" .. fmt .. ")", lo * k, hi * k) end
  return text
end

-- One section's table.
local function report_section(section)
  local name, title, ref = section[1], section[2], section[3]
  say("")
  say("== %s", title)
  say("%-52s %10s %10s %10s %7s %7s %9s%s", "method", "median", "min", "max", "spread",
    ref and "ratio" or "ns/op", "cpu us/op", section.extra and "  " .. section.extra or "")
  local others = {}
  for _, m in ipairs(methods) do
    if m.section == name then
      local med, lo, hi = stats(m)
      local ref_rate = ref and rate_of(m.ref or ref)
      if m.na then
        say("%-52s %s", m.label, m.na)
      elseif not med then
        say("%-52s %s", m.label, m.last_error or "no result")
      else
        local last = ref_rate and ratio_text(med, ref_rate) or (ref and "" or format("%.0f", 1e9 / med))
        say("%-52s %10s %10s %10s %6.1f%% %7s %9s%s%s", m.label, thousands(med), thousands(lo),
          thousands(hi), (hi - lo) / med * 100, last,
          #m.cpu > 0 and format("%.2f", median(m.cpu) * 1e6) or "-",
          section.extra and "  " .. extra_text(section, m) or "",
          m.errors and format("  (%d failed runs)", m.errors) or "")
      end
      if m.ref and m.ref ~= m.id then others[#others + 1] = m end
    end
  end
  if ref then
    say("(ratio: median / median of %s)", (by_id[ref].label:gsub("%s+", " ")))
    for _, m in ipairs(others) do
      say("(  %s: of %s)", (m.label:gsub("%s+", " ")), (by_id[m.ref].label:gsub("%s+", " ")))
    end
  end
end

-- Every section that has a method (BENCH_ONLY leaves some empty).
local function report_throughput()
  for _, section in ipairs(SECTIONS) do
    local any = false
    for _, m in ipairs(methods) do any = any or m.section == section[1] end
    if any then report_section(section) end
  end
  say("(cpu us/op: CPU time, user + system, of the client process per operation, median;"
    .. " OpenResty: of the nginx workers)")
end

-- Instructions per query (callgrind) ---------------------------------------------------------

-- Total instructions of a command under callgrind; the profile is kept.
local function callgrind(name, cmd, count)
  local file = format("%s/callgrind.%s.out", OUT_DIR, name)
  local out = capture(command(function()
    local env_part, program = cmd(1)
    return env_part, program .. " " .. count
  end, 1, format("valgrind --tool=callgrind --callgrind-out-file=%s ", file)))
  local total = out:match("Collected : (%d+)")
  if not total or not out:match("ops=%d+") then
    return nil, "failed: " .. out:gsub("\n", " | "):sub(-300)
  end
  return tonumber(total), file
end

-- Cost per function, from callgrind_annotate: { ["fn [obj]"] = Ir }; self
-- cost, or with `inclusive` the cost including callees.
local function costs_of(file, inclusive)
  local costs = {}
  local out = capture("callgrind_annotate --threshold=100 " .. (inclusive and "--inclusive=yes " or "") .. file)
  for count, fn, obj in out:gmatch("\n%s*([%d,]+) %(%s*[%d.]+%%%)%s+(%S+) %[([^%]]+)%]") do
    local key = fn:gsub("^.*/", "") .. " [" .. obj:gsub("^.*/", "") .. "]"
    costs[key] = (costs[key] or 0) + tonumber((count:gsub(",", "")))
  end
  return costs
end

local CG_PROGRAMS = {
  { id = "pgpool_lua54", label = "pgpool lua5.4, held conn", cmd = worker_cmd("lua5.4", "held_param") },
  { id = "pgpool_luajit", label = "pgpool luajit, held conn", cmd = worker_cmd("luajit", "held_param") },
  { id = "raw_param", label = "raw libpq PQexecParams", cmd = raw_cmd("param") },
  { id = "raw_prepared", label = "raw libpq PQexecPrepared", cmd = raw_cmd("prepared") },
  { id = "luasql_lua54", label = "LuaSQL lua5.4 (string-built SQL)", cmd = worker_cmd("lua5.4", "luasql_sum") },
  { id = "acquire_lua54", label = "pgpool lua5.4 acquire():release() pair", cmd = worker_cmd("lua5.4", "acquire_release") },
  { id = "acquire_hogs_lua54", label = "same, track_hogs = true", cmd = worker_cmd("lua5.4", "acquire_release_hogs") },
}
if ONLY then
  local kept = {}
  for _, prog in ipairs(CG_PROGRAMS) do
    if selected(prog.id) then kept[#kept + 1] = prog end
  end
  CG_PROGRAMS = kept
end

local instructions = {}

local function report_instructions()
  if #CG_PROGRAMS == 0 then return end     -- BENCH_ONLY chose none
  say("")
  say("== client instructions per operation (callgrind; (Ir at %d - Ir at %d) / %d; select $1::int + 1)",
    CG_LARGE, CG_SMALL, CG_LARGE - CG_SMALL)
  for _, prog in ipairs(CG_PROGRAMS) do
    local results = {}
    for _, n in ipairs{ CG_SMALL, CG_LARGE } do
      local total, file = callgrind(prog.id .. "." .. n, prog.cmd, n)
      if not total then
        say("%-42s %s", prog.label, file)
        break
      end
      results[#results + 1] = { total = total, file = file }
    end
    if #results == 2 then
      local per = (results[2].total - results[1].total) / (CG_LARGE - CG_SMALL)
      instructions[prog.id] = { per = per, small = results[1].file, large = results[2].file }
      say("%-42s %10s", prog.label, thousands(per))
    end
  end
end

-- Where the instructions go, per operation: the difference between the two
-- runs' costs, per function, largest first.
local function per_op_costs(cg, inclusive)
  local small, large = costs_of(cg.small, inclusive), costs_of(cg.large, inclusive)
  local rows = {}
  for key, cost in pairs(large) do
    local per = (cost - (small[key] or 0)) / (CG_LARGE - CG_SMALL)
    if per >= 1 then rows[#rows + 1] = { key = key, per = per } end
  end
  table.sort(rows, function(a, b) return a.per > b.per end)
  return rows
end

local function report_profile(id, title)
  local cg = instructions[id]
  if not cg then return end
  local rows, by_object = per_op_costs(cg, false), {}
  for _, row in ipairs(rows) do
    local obj = row.key:match("%[(.-)%]$")
    by_object[obj] = (by_object[obj] or 0) + row.per
  end
  local objs = {}
  for obj, per in pairs(by_object) do objs[#objs + 1] = { obj = obj, per = per } end
  table.sort(objs, function(a, b) return a.per > b.per end)
  local parts = {}
  for i = 1, math.min(6, #objs) do parts[i] = format("%s %s", objs[i].obj, thousands(objs[i].per)) end
  say("")
  say("-- %s: %s instructions per operation", title, thousands(cg.per))
  say("   self, by object: %s", concat(parts, ", "))
  say("   self, top functions (??? = that binary has no symbols):")
  for i = 1, math.min(12, #rows) do
    say("   %8s  %s", thousands(rows[i].per), rows[i].key)
  end
  local own = {}
  for _, row in ipairs(per_op_costs(cg, true)) do
    if row.key:match("%[core%.so%]$") or row.key:match("%[rawpq%]$") then own[#own + 1] = row end
  end
  if #own > 0 then
    say("   inclusive, the program's own functions:")
    for i = 1, math.min(12, #own) do
      say("   %8s  %s", thousands(own[i].per), own[i].key)
    end
  end
end

-- Memory -------------------------------------------------------------------------------------

local memory = {}

local function kv(out)
  local t = {}
  for k, v in out:gmatch("(%w[%w_]*)=(%S+)") do t[k] = tonumber(v) or v end
  return t
end

local function report_memory()
  local pin = PLACEMENT.same
  pin_server(pin.server)
  say("")
  say("== memory (VmRSS in kB; \"before\", \"after\", start and end are taken after a full garbage collection)")
  for _, case in ipairs{
    { "idle20", "lua5.4", "rss_idle20", "pgpool, 20 idle pooled connections" },
    { "luasql20", "lua5.4", "luasql_idle20", "LuaSQL, 20 open connections (comparison)" },
  } do
    local t = kv(capture(command(worker_cmd(case[2], case[3]), 1, pin.client)))
    if t.rss_after then
      memory[case[1]] = t
      say("%-44s %8d kB  (%d kB before connecting: %.0f kB per connection)", case[4],
        t.rss_after, t.rss_before, (t.rss_after - t.rss_before) / 20)
    else
      say("%-44s failed", case[4])
    end
  end
  for _, case in ipairs{
    { "queries", "rss_queries", "select 1 on a held connection" },
    { "acquire", "rss_acquire", "acquire():release() pairs" },
  } do
    local out = capture(command(worker_cmd("lua5.4", case[2], MEM_WARM), 1, pin.client))
    local t = kv(out)
    if t.rss_start then
      memory[case[1]] = t
      say("lua5.4 %s: %s warm-up, then %s more (%.0f/s): RSS %d -> %d kB (%+d kB), Lua heap %d kB",
        case[3], thousands(MEM_WARM), thousands(t.ops), t.ops / t.secs, t.rss_start, t.rss_end,
        t.rss_end - t.rss_start, t.lua_kb)
      say("   RSS every %s (no forced GC): %s", thousands(MEM_WARM), (t.samples:gsub(",", " ")))
    else
      say("lua5.4 %s: failed: %s", case[3], out:sub(1, 300))
    end
  end
end

-- Targets ------------------------------------------------------------------------------------

local targets = {}

-- status: "PASS" / "MISS" / "N/A"; value shown as text. Reference rows
-- (what raw libpq reaches) are shown as "ref" and not counted.
local function target(name, goal, value_text, pass, na, ref)
  local status = na and "N/A" or (pass and "PASS" or "MISS")
  targets[#targets + 1] = { name = name, goal = goal, value = value_text,
    status = ref and "(ref " .. status .. ")" or status, ref = ref }
end

-- The ratio a/b of two methods, paired by round: the median of the
-- per-round ratios, shown with their min..max. Both methods ran in the same
-- round, close together in time, so a slow spell of the shared machine
-- affects both sides of a ratio rather than one.
local function paired_ratio(a, b)
  local ratios = {}
  for round, ra in pairs(a.by_round) do
    local rb = b.by_round[round]
    if rb then ratios[#ratios + 1] = ra / rb end
  end
  if #ratios == 0 then return nil end
  table.sort(ratios)
  return median(ratios), ratios[1], ratios[#ratios]
end

local function ratio_target(name, goal, a_id, b_id, min_ratio, ref)
  local a, b = by_id[a_id], by_id[b_id]
  if a.na or b.na then
    return target(name, goal, "n/a (not implemented)", nil, true, ref)
  end
  local r, lo, hi = paired_ratio(a, b)
  if not r then return target(name, goal, "no result", false, nil, ref) end
  local text = lo == hi and format("%.2fx", r) or format("%.2fx (%.2f-%.2f)", r, lo, hi)
  target(name, goal, text, r >= min_ratio, nil, ref)
end

-- RSS growth counted as none up to this much (allocator and page noise).
local RSS_TOLERANCE_KB = 256
-- The same for the peak RSS of two processes streaming 10^5 and 10^6 rows:
-- one run's peak varies by ~200 kB (9.2-9.4 MB from 10^3 to 10^7 rows
-- here), against +245 MB for conn:query's 10^6 rows.
local STREAM_RSS_TOLERANCE_KB = 1024

local function report_targets()
  ratio_target("pooled op vs connect-per-op (lua5.4, pool:query vs LuaSQL)", ">= 25x", "pool_query_lua5.4", "luasql_connect", 25)
  ratio_target("  same, vs pgpool configure+query+shutdown per op", ">= 25x", "pool_query_lua5.4", "pgpool_connect", 25)
  for _, rt in ipairs(RUNTIMES) do
    ratio_target(format("held conn vs raw libpq, select $1::int + 1 (%s)", rt), ">= 0.95x", "held_param_" .. rt, "raw_param", 0.95)
    ratio_target(format("held conn vs raw libpq, select 1 (%s)", rt), ">= 0.95x", "held_select1_" .. rt, "raw_select1", 0.95)
  end
  for _, rt in ipairs(RUNTIMES) do
    ratio_target(format("pgpool vs LuaSQL, select 1 (%s)", rt), ">= 1x", "held_select1_" .. rt, "luasql_select1_" .. rt, 1)
    ratio_target(format("pgpool $1 vs LuaSQL string-built, 41 + 1 (%s)", rt), ">= 1x", "held_param_" .. rt, "luasql_sum_" .. rt, 1)
  end
  for _, rt in ipairs(RUNTIMES) do
    ratio_target(format("pgpool pipelined x100 vs sequential, one CPU (%s)", rt), ">= 15x", "pipeline_param_" .. rt, "held_param_" .. rt, 15)
  end
  ratio_target("pgpool pipelined x100 vs sequential, two CPUs (lua5.4)", ">= 15x", "pipeline_param_split", "held_param_split", 15)
  ratio_target("  reference: raw libpq pipelined x100 vs sequential, one CPU", ">= 15x", "raw_pipe_param", "raw_param", 15, true)
  ratio_target("  reference: raw libpq pipelined x100 vs sequential, two CPUs", ">= 15x", "raw_pipe_param_split", "raw_param_split", 15, true)
  for _, rt in ipairs(RUNTIMES) do
    ratio_target(format("%d threads through pgpool vs pgbench -c %d -M extended (%s)", THREADS, THREADS, rt),
      ">= 0.8x", "threads_" .. rt, "pgbench_extended", 0.8)
  end
  local rows_1e5, rows_1e6 = by_id.rows_stream_1e5, by_id.rows_stream
  local rows_target = format("conn:rows peak RSS, 10^6 rows vs 10^5 (lua5.4)")
  if #rows_1e5.extra > 0 and #rows_1e6.extra > 0 then
    local small, large = median(rows_1e5.extra), median(rows_1e6.extra)
    target(rows_target, format("flat (<= +%d kB)", STREAM_RSS_TOLERANCE_KB),
      format("%+.0f kB (%s -> %s)", large - small, thousands(small), thousands(large)),
      large - small <= STREAM_RSS_TOLERANCE_KB)
  else
    target(rows_target, "flat", "no result", false)
  end
  ratio_target(format("TPC-B, %d threads in pool:transaction vs pgbench -M extended", THREADS),
    ">= 0.9x", "tpcb_threads", "tpcb_pgbench_extended", 0.9)
  ratio_target("TPC-B, statement_cache = 100 vs pgbench -M prepared",
    ">= 0.9x", "tpcb_threads_cached", "tpcb_pgbench_prepared", 0.9)
  ratio_target("OpenResty select, ngx.run_worker_thread vs direct (req/s)",
    ">= 0.8x", "nginx_thread", "nginx_query", 0.8)
  for _, id in ipairs{ "acquire", "acquire_hogs" } do
    for _, rt in ipairs(RUNTIMES) do
      local r = rate_of(id .. "_" .. rt)
      target(format("acquire + release%s, uncontended (%s)", id == "acquire_hogs" and " with track_hogs" or "", rt),
        "<= 1 us", r and format("%.2f us", 1e6 / r) or "no result", r ~= nil and 1e6 / r <= 1.0)
    end
  end
  local p, raw = instructions.pgpool_lua54, instructions.raw_param
  if p and raw then
    target("client instructions per select $1::int + 1, lua5.4 vs libpq", "<= 2x",
      format("%.2fx (%s / %s)", p.per / raw.per, thousands(p.per), thousands(raw.per)), p.per / raw.per <= 2)
  else
    target("client instructions per select $1::int + 1, lua5.4 vs libpq", "<= 2x", "no result", false)
  end
  local q = memory.queries
  if q then
    local growth = q.rss_end - q.rss_start
    target(format("RSS growth over %s queries (lua5.4, held conn)", thousands(q.ops)),
      format("none (<= %d kB)", RSS_TOLERANCE_KB), format("%+d kB", growth), growth <= RSS_TOLERANCE_KB)
  else
    target("RSS growth over the queries (lua5.4, held conn)", "none", "no result", false)
  end

  say("")
  say("== targets (ratios: median of the per-round ratios, with their range)")
  say("%-64s %-24s %-16s %s", "target", "measured", "goal", "status")
  local pass, miss, na = 0, 0, 0
  for _, t in ipairs(targets) do
    if not (ONLY and t.value == "no result") then   -- BENCH_ONLY: what ran
      say("%-64s %-24s %-16s %s", t.name, t.value, t.goal, t.status)
      if t.ref then -- not counted
      elseif t.status == "PASS" then pass = pass + 1
      elseif t.status == "N/A" then na = na + 1
      else miss = miss + 1 end
    end
  end
  say("%d PASS, %d MISS, %d N/A (feature not implemented)", pass, miss, na)
end

-- Main -----------------------------------------------------------------------------------------

local started = now()
say("pgpool benchmark%s: %d round(s) of %.1f s per method (threads and pgbench: %d s), interleaved",
  QUICK and " (quick mode)" or "", ROUNDS, SECONDS, THREAD_SECONDS)
machine()

-- Features that are not there are found once, not in every round.
for _, m in ipairs(methods) do
  if m.id:match("^cached_") or m.id:match("^pipeline_") then
    run_method(m)
    m.samples, m.errors, m.last_error = {}, nil, nil
  end
end

-- Odd rounds run the list forwards, even rounds backwards: drift during a
-- round then favours no method, and compared methods stay neighbours. A
-- group left open (nginx) is stopped at the end, or on an error.
local rounds = 0
for _, m in ipairs(methods) do rounds = math.max(rounds, m.rounds or ROUNDS) end
local ok, err = xpcall(function()
  for round = 1, rounds do
    local t0 = now()
    for i = 1, #methods do
      local m = methods[round % 2 == 1 and i or #methods + 1 - i]
      if not m.na and round <= (m.rounds or ROUNDS) then run_method(m, round) end
    end
    io.stderr:write(format("bench: round %d/%d done in %.0f s\n", round, rounds, now() - t0))
  end
end, debug.traceback)
enter_group(nil)
if not ok then error(err, 0) end

report_throughput()
report_instructions()
report_profile("pgpool_lua54", "pgpool lua5.4, conn:query(\"select $1::int + 1\", 41)")
report_profile("raw_param", "raw libpq, PQexecParams(\"select $1::int + 1\")")
report_profile("acquire_lua54", "pgpool lua5.4, pool:acquire():release()")
report_profile("acquire_hogs_lua54", "pgpool lua5.4, pool:acquire():release() with track_hogs")
if not ONLY then report_memory() end
report_targets()
say("")
say("load      : %s(at end); total time %.0f s; transcript in %s/last-run.txt",
  first_line("cat /proc/loadavg"):match("^(%S+ %S+ %S+ )"), now() - started, OUT_DIR)
transcript:close()
