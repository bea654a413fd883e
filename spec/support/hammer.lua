-- Run by lthreads: thread 1 samples the server's pgpool backends, threads
-- 2..N hammer the pool "hammer" (max 4), and the final run (index 0) reports
-- the pool's counters.   lthreads N hammer.lua SECONDS DSN
local index, seconds, dsn = ...
local pgpool = require("pgpool")
seconds = tonumber(seconds)

local pool = pgpool.configure{
  name = "hammer", conninfo = dsn, max = 4, acquire_timeout = 0.5, log_level = "error",
}

if index == 0 then
  local st = pool:stats()
  local line = string.format(
    "acquired=%d released=%d total=%d idle=%d in_use=%d connecting=%d waiting=%d "
      .. "created=%d closed=%d queries=%d query_errors=%d timeouts=%d leaked=%d",
    st.acquired, st.released, st.total, st.idle, st.in_use, st.connecting, st.waiting,
    st.created, st.closed, st.queries, st.query_errors, st.timeouts, st.leaked)
  pgpool.shutdown_all{ timeout = 2 }
  return line
end

local deadline = os.time() + seconds

if index == 1 then
  -- A separate pool whose backends the count leaves out.
  local sampler = pgpool.configure{
    name = "sampler", conninfo = dsn .. " application_name=pgpool_sampler", max = 1,
    log_level = "error",
  }
  -- Through PgBouncer the server's backends are PgBouncer's (they keep
  -- the application_name of their last client): its clients are counted.
  local function count_via_pgbouncer()
    local p = assert(io.popen(("%s/psql -h '%s' -p %s -U postgres -d pgbouncer -XAq --csv -c 'SHOW CLIENTS'")
      :format(os.getenv("PGPOOL_TEST_PGBIN"), os.getenv("PGPOOL_TEST_PGBOUNCER_SOCKDIR"),
        os.getenv("PGPOOL_TEST_PGBOUNCER_PORT"))))
    local n = 0
    for line in p:lines() do
      if line:match(",pgpool$") then n = n + 1 end   -- application_name is the last column
    end
    p:close()
    return n
  end
  local via_pgbouncer = os.getenv("PGPOOL_TEST_VIA") == "pgbouncer"
  local peak, samples = 0, 0
  while os.time() < deadline do
    local n
    if via_pgbouncer then
      n = count_via_pgbouncer()
    else
      n = assert(sampler:query(
        "select count(*)::int as n from pg_stat_activity where application_name = 'pgpool'"))[1].n
    end
    samples = samples + 1
    if n > peak then peak = n end
    -- the figures, read while the others hammer (ThreadSanitizer)
    assert(pool:health().status)
    assert(#pgpool.metrics() > 0)
    sampler:query("select pg_sleep(0.01)")
  end
  return string.format("peak=%d samples=%d", peak, samples)
end

local ok, timeouts, errors, i = 0, 0, 0, 0
local function tally(res, msg, code)
  if res then
    ok = ok + 1
  elseif code == "timeout" then
    timeouts = timeouts + 1
  else
    errors = errors + 1
    io.stderr:write("hammer: ", tostring(msg), " (", tostring(code), ")\n")
  end
end

while os.time() < deadline do
  i = i + 1
  local kind = i % 3
  if kind == 0 then
    local res, msg, code = pool:query("select $1::int + 1 as n", i)
    if res and res[1].n ~= i + 1 then error("wrong answer") end
    tally(res, msg, code)
  elseif kind == 1 then
    local conn, msg, code = pool:acquire()
    if conn then
      tally(conn:query("select pg_sleep(0.001)"))
      conn:release()
    else
      tally(nil, msg, code)
    end
  else
    tally(pool:transaction(function(conn)
      local res = assert(conn:query("select txid_current() as x"))
      return res[1].x
    end))
  end
end
return string.format("ok=%d timeouts=%d errors=%d", ok, timeouts, errors)
