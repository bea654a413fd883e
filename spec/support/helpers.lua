-- Helpers for pgpool specs (Lua 5.4 and LuaJIT).
-- Expects the PGPOOL_TEST_* variables set by spec/support/with-pg.sh.

local helpers = {}

local has_uv, uv = pcall(require, 'luv')
if not has_uv then uv = nil end

local function env(name)
  local v = os.getenv(name)
  if not v or v == '' then
    error(name .. ' is not set: run the specs via spec/support/with-pg.sh', 3)
  end
  return v
end

function helpers.dsn() return env('PGPOOL_TEST_DSN') end
function helpers.tcp_dsn() return env('PGPOOL_TEST_TCP_DSN') end
function helpers.pw_url() return env('PGPOOL_TEST_PW_URL') end

-- Whole server log as a string (PGPOOL_TEST_LOG).
function helpers.server_log()
  local path = env('PGPOOL_TEST_LOG')
  local f = assert(io.open(path, 'r'))
  local s = f:read('*a')
  f:close()
  return s
end

-- Sleep s seconds (fractions allowed).
function helpers.sleep(s)
  if uv then
    uv.sleep(math.floor(s * 1000 + 0.5))
  else
    os.execute('sleep ' .. tonumber(s))
  end
end

-- Monotonic time in seconds (CPU time as a fallback without luv).
function helpers.now()
  if uv then return uv.hrtime() / 1e9 end
  return os.clock()
end

-- Poll fn() every `interval` s (default 0.05) until it returns a true value
-- or `timeout` s (default 5) pass. Returns true if fn succeeded.
function helpers.wait_until(fn, timeout, interval)
  timeout, interval = timeout or 5, interval or 0.05
  local deadline = helpers.now() + timeout
  while true do
    if fn() then return true end
    if helpers.now() >= deadline then return false end
    helpers.sleep(interval)
  end
end

-- Quote a string for /bin/sh.
local function shquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helpers.shquote = shquote

-- Run a /bin/sh command line; returns its exit status (a number) and its
-- stdout and stderr together. The status is appended as the last output
-- line: io.popen():close() does not report it on LuaJIT.
function helpers.run(cmd)
  local p = assert(io.popen('(' .. cmd .. ') </dev/null 2>&1; echo "$?"', 'r'))
  local out = p:read('*a')
  p:close()
  local body, rc = out:match('^(.-)\n?(%d+)\n$')
  return tonumber(rc), body or out
end

local function read_file(path)
  local f = io.open(path, 'r')
  if not f then return '' end
  local s = f:read('*a')
  f:close()
  return s
end

-- Run one SQL string through psql as postgres on pgpool_test; returns the
-- trimmed unaligned output. Raises an error with psql's stderr on failure.
function helpers.psql(sql)
  local bin = os.getenv('PGPOOL_TEST_PGBIN')
  local psql = (bin and bin ~= '') and (bin .. '/psql') or 'psql'
  local errfile = os.tmpname()
  local cmd = table.concat({
    shquote(psql), '-h', shquote(env('PGPOOL_TEST_SOCKDIR')), '-p', shquote(env('PGPOOL_TEST_PORT')),
    '-U postgres -d pgpool_test -XAtq -v ON_ERROR_STOP=1 -c', shquote(sql),
    '2>' .. shquote(errfile), '</dev/null',
  }, ' ')
  -- The exit status is appended as the last output line: io.popen():close()
  -- does not report it on LuaJIT.
  local p = assert(io.popen(cmd .. '; echo "$?"', 'r'))
  local out = p:read('*a')
  p:close()
  local stderr = read_file(errfile)
  os.remove(errfile)

  local body, rc = out:match('^(.-)\n?(%d+)\n$')
  if rc ~= '0' then
    error(('psql failed (exit %s) for: %s\n%s'):format(tostring(rc), sql, stderr), 2)
  end
  return (body:gsub('^%s+', ''):gsub('%s+$', ''))
end

-- Number of pg_stat_activity rows with the given application_name.
function helpers.count_backends(app)
  app = app or 'pgpool'
  local n = helpers.psql(("SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'")
    :format(app:gsub("'", "''")))
  return tonumber(n)
end

return helpers
