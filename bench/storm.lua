-- The storm figures ("Never the storm"), against one throwaway server
-- (spec/support/with-pg.sh; `make bench-storm`):
--
--   down       the server refusing (a closed port): connection attempts per
--              second made by 12 callers retrying acquire for 2 s;
--   full       the server's slots all taken by another client while the
--              pool holds 3: callers served and failed over 3 s, attempts/s;
--   recovery   the server stopped, then started again while 12 callers
--              retry: seconds from `pg_ctl start` to the first caller
--              served (pg_ctl's own time is printed beside it).
--
-- LUA_CPATH picks the module, so the same script measures an older build
-- (BENCH_STORM_CPATH=build/before/?.so) beside this one. Counts use only
-- stats() fields that every version has (connect_errors, acquired).
local uv = require('luv')
local pgpool = require('pgpool')
local DSN = assert(os.getenv('PGPOOL_TEST_DSN'), 'run via spec/support/with-pg.sh')
local now = function() return uv.hrtime() / 1e9 end

local function caller(path, cpath, name, seconds, file)
  package.path, package.cpath = path, cpath
  local luv = require('luv')
  local p = assert(require('pgpool').pool(name))
  local ok, failed, first_ok = 0, 0, -1
  local t0 = luv.hrtime() / 1e9
  local stop = t0 + seconds
  while luv.hrtime() / 1e9 < stop do
    local conn = p:acquire{ timeout = 0.5 }
    if conn then
      ok = ok + 1
      if first_ok < 0 then first_ok = luv.hrtime() / 1e9 end
      luv.sleep(10)                 -- the connection's work
      conn:release()
    else
      failed = failed + 1
    end
    luv.sleep(5)
  end
  local f = assert(io.open(file, 'w'))
  f:write(('%d %d %.6f'):format(ok, failed, first_ok))
  f:close()
end

local function callers(name, n, seconds, during)
  local threads, files = {}, {}
  for i = 1, n do
    files[i] = os.tmpname()
    threads[i] = uv.new_thread(caller, package.path, package.cpath, name, seconds, files[i])
  end
  if during then during() end
  local ok, failed, first = 0, 0, math.huge
  for i = 1, n do
    threads[i]:join()
    local f = assert(io.open(files[i]))
    local a, b, c = f:read('a'):match('(%d+) (%d+) ([-%d.]+)')
    f:close()
    os.remove(files[i])
    ok, failed = ok + tonumber(a), failed + tonumber(b)
    if tonumber(c) > 0 and tonumber(c) < first then first = tonumber(c) end
  end
  return ok, failed, first
end

local function pg_ctl(action)
  local cmd = ("runuser -u postgres -- %s/pg_ctl -D %s/data -l %s -m fast -w -t 30 %s >/dev/null 2>&1"):format(
    os.getenv('PGPOOL_TEST_PGBIN'), os.getenv('PGPOOL_TEST_DIR'), os.getenv('PGPOOL_TEST_LOG'), action)
  assert(os.execute(cmd))
end

print(('storm figures, module %s'):format(package.searchpath('pgpool.core', package.cpath)))

-- down
local down = pgpool.configure{ name = 'down', conninfo = 'host=127.0.0.1 port=1 dbname=x', max = 10,
  log_level = 'off' }
local ok, failed = callers('down', 12, 2)
print(('down:     %6.0f attempts/s (12 callers, 2 s; %d calls failed, %d served)'):format(
  down:stats().connect_errors / 2, failed, ok))
down:shutdown()

-- full
local full = pgpool.configure{ name = 'full', conninfo = DSN, max = 30, acquire_timeout = 5, log_level = 'off' }
local held = {}
for i = 1, 3 do held[i] = assert(full:acquire()) end
for i = 1, 3 do held[i]:release() end
local hog = pgpool.configure{ name = 'hog', conninfo = DSN, max = 150, log_level = 'off', acquire_timeout = 1 }
local hogged = {}
while true do
  local h = hog:acquire{ timeout = 1 }
  if not h then break end
  hogged[#hogged + 1] = h
end
local errors0 = full:stats().connect_errors
ok, failed = callers('full', 12, 3)
print(('full:     %6d served, %d failed, %.0f attempts/s (12 callers, 3 s, 3 connections held, %d taken by another client)'):format(
  ok, failed, (full:stats().connect_errors - errors0) / 3, #hogged))
for _, h in ipairs(hogged) do h:release() end
hog:shutdown()
full:shutdown()

-- recovery
local rec = pgpool.configure{ name = 'recovery', conninfo = DSN, max = 10, log_level = 'off', connect_timeout = 2 }
pg_ctl('stop')
local started
local _, _, first = callers('recovery', 12, 8, function()
  uv.sleep(2000)
  started = now()
  pg_ctl('start')
  print(('          pg_ctl start took %.2f s'):format(now() - started))
end)
print(('recovery: %6.2f s from pg_ctl start to the first caller served (%d failed attempts while down)'):format(
  first - started, rec:stats().connect_errors))
rec:shutdown()
