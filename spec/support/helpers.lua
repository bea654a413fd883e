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

-- helpers.run that raises, with the output, unless the command succeeds;
-- returns the output.
function helpers.must_run(cmd)
  local rc, out = helpers.run(cmd)
  assert(rc == 0, ('command failed (exit %s): %s\n%s'):format(tostring(rc), cmd, out))
  return out
end

local function read_file(path)
  local f = io.open(path, 'r')
  if not f then return '' end
  local s = f:read('*a')
  f:close()
  return s
end

-- Write text to path (raises on failure).
function helpers.write_file(path, text)
  local f = assert(io.open(path, 'w'))
  f:write(text)
  f:close()
end

-- psql as postgres to `db` at host (a socket directory) and port, for one
-- SQL string, with extra flags; the output, or raises with psql's stderr.
local function run_psql(host, port, db, flags, sql, level)
  local bin = os.getenv('PGPOOL_TEST_PGBIN')
  local psql = (bin and bin ~= '') and (bin .. '/psql') or 'psql'
  local errfile = os.tmpname()
  local cmd = table.concat({
    shquote(psql), '-h', shquote(host), '-p', shquote(port),
    '-U postgres -d', shquote(db), '-Xq -v ON_ERROR_STOP=1', flags, '-c', shquote(sql),
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
    error(('psql failed (exit %s) for: %s\n%s'):format(tostring(rc), sql, stderr), level + 1)
  end
  return body
end

-- Run one SQL string through psql as postgres on pgpool_test, on the
-- server itself (never through PgBouncer); returns the trimmed unaligned
-- output. Raises an error with psql's stderr on failure.
function helpers.psql(sql)
  local body = run_psql(env('PGPOOL_TEST_SOCKDIR'), env('PGPOOL_TEST_PORT'), 'pgpool_test', '-At', sql, 2)
  return (body:gsub('^%s+', ''):gsub('%s+$', ''))
end

-- True when the specs' conninfo leads through PgBouncer in transaction
-- mode (make test-pgbouncer; spec/support/pgbouncer.sh).
function helpers.via_pgbouncer()
  return os.getenv('PGPOOL_TEST_VIA') == 'pgbouncer'
end

-- The rows of a PgBouncer admin console command ('SHOW CLIENTS'), each a
-- table by column name (values as text).
function helpers.pgbouncer_show(command)
  local body = run_psql(env('PGPOOL_TEST_PGBOUNCER_SOCKDIR'), env('PGPOOL_TEST_PGBOUNCER_PORT'),
    'pgbouncer', "-A -F '\t' -P footer=off", command, 2)
  local rows, names = {}, nil
  for line in (body .. '\n'):gmatch('([^\n]*)\n') do
    local fields = {}
    for field in (line .. '\t'):gmatch('([^\t]*)\t') do fields[#fields + 1] = field end
    if not names then
      names = fields
    elseif line ~= '' then
      local row = {}
      for i, name in ipairs(names) do row[name] = fields[i] end
      rows[#rows + 1] = row
    end
  end
  return rows
end

-- Number of connections with the given application_name (default
-- 'pgpool') that this run's clients hold: the server's backends
-- (pg_stat_activity), or through PgBouncer its clients (SHOW CLIENTS), as
-- PgBouncer keeps its server connections when its clients go.
-- A JSON answer decoded (lua-cjson); fails the spec on anything but JSON.
function helpers.decode_json(body)
  local value, err = require('cjson.safe').decode(body or '')
  assert(value ~= nil, ('not JSON (%s): %s'):format(tostring(err), tostring(body)))
  return value
end

-- count_backends(app), or nil while the server has no slot left for psql.
function helpers.backends_or_nil(app)
  local ok, n = pcall(helpers.count_backends, app)
  return ok and n or nil
end

function helpers.count_backends(app)
  app = app or 'pgpool'
  if helpers.via_pgbouncer() then
    local n = 0
    for _, row in ipairs(helpers.pgbouncer_show('SHOW CLIENTS')) do
      if row.application_name == app then n = n + 1 end
    end
    return n
  end
  local n = helpers.psql(("SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'")
    :format(app:gsub("'", "''")))
  return tonumber(n)
end

-- Length of the server log now; pass it to helpers.server_log_since later.
function helpers.server_log_size()
  return #helpers.server_log()
end

-- What the server logged after `offset` bytes (from helpers.server_log_size).
function helpers.server_log_since(offset)
  return helpers.server_log():sub(offset + 1)
end

-- The log of what pgpool's connections talk to: the server's, or in the
-- PgBouncer run PgBouncer's. peer_log_size() now; peer_log_since(offset)
-- what it logged after that. PEER_EOF is what that log says of a client
-- gone without a Terminate message (with log_min_messages=debug1 on the
-- server for a session outside a transaction).
local function peer_log()
  if helpers.via_pgbouncer() then
    return read_file(env('PGPOOL_TEST_DIR') .. '/pgbouncer/pgbouncer.log')
  end
  return helpers.server_log()
end
function helpers.peer_log_size() return #peer_log() end
function helpers.peer_log_since(offset) return peer_log():sub(offset + 1) end
helpers.PEER_EOF = os.getenv('PGPOOL_TEST_VIA') == 'pgbouncer' and 'client unexpected eof'
  or 'unexpected EOF'

-- The state of conn's session as the peer sees it: pg_stat_activity.state
-- of its backend ('idle', 'active', 'idle in transaction', ...), or in the
-- PgBouncer run 'idle' when PgBouncer holds no server connection for it
-- (its transaction is over) and 'linked' otherwise. Through PgBouncer the
-- connection is found as the only client named `app` (default 'pgpool').
function helpers.session_state(conn, app)
  if not helpers.via_pgbouncer() then
    return helpers.psql('select state from pg_stat_activity where pid = ' .. conn:backend_pid())
  end
  local row = helpers.pgbouncer_client(app)
  return row.link == '' and 'idle' or 'linked'
end

-- PgBouncer's SHOW CLIENTS row of the one client named `app` (default
-- 'pgpool'); raises unless there is exactly one.
function helpers.pgbouncer_client(app)
  app = app or 'pgpool'
  local found = {}
  for _, row in ipairs(helpers.pgbouncer_show('SHOW CLIENTS')) do
    if row.application_name == app then found[#found + 1] = row end
  end
  assert(#found == 1, ('%d PgBouncer clients named %s, not 1'):format(#found, app))
  return found[1]
end

-- The local TCP port of conn's socket (conn on a TCP conninfo, the only
-- client named `app` through PgBouncer).
function helpers.client_port(conn, app)
  if helpers.via_pgbouncer() then return tonumber(helpers.pgbouncer_client(app).port) end
  return assert(conn:query('select client_port from pg_stat_activity where pid = pg_backend_pid()'))[1].client_port
end

-- The interpreter running these specs: "lua5.4" or "luajit"
-- (PGPOOL_TEST_RUNTIME, set by run-specs.sh; guessed from _VERSION otherwise).
function helpers.runtime()
  local rt = os.getenv('PGPOOL_TEST_RUNTIME')
  if rt and rt ~= '' then return rt end
  if rawget(_G, 'jit') then return 'luajit' end
  return 'lua' .. _VERSION:match('%d+%.%d+')
end

-- The shell words that start the current runtime as a child that loads this
-- run's module (under make test SANITIZE=1 it needs the ASan runtime back:
-- spec/support/sanitizer.lua).
function helpers.lua_command()
  return require('spec.support.sanitizer').lua_command(shquote(helpers.runtime()))
end

-- Run the Lua source `code` in a child process under the current runtime,
-- with this process's package.path and package.cpath. opts.env: variables
-- to set ({NAME = value}); opts.unset: names to remove from the environment.
-- Returns stdout, stderr, exit status (a number).
function helpers.run_lua(code, opts)
  opts = opts or {}
  local script = os.tmpname()
  local errfile = os.tmpname()
  local f = assert(io.open(script, 'w'))
  f:write(('package.path = %q\npackage.cpath = %q\n'):format(package.path, package.cpath))
  f:write(code)
  f:close()
  local parts = { 'env' }
  for _, name in ipairs(opts.unset or {}) do parts[#parts + 1] = '-u ' .. shquote(name) end
  for name, value in pairs(opts.env or {}) do parts[#parts + 1] = shquote(name .. '=' .. value) end
  parts[#parts + 1] = helpers.lua_command()
  parts[#parts + 1] = shquote(script)
  parts[#parts + 1] = '2>' .. shquote(errfile) .. ' </dev/null'
  local p = assert(io.popen(table.concat(parts, ' ') .. '; echo "$?"', 'r'))
  local out = p:read('*a')
  p:close()
  local stderr = read_file(errfile)
  os.remove(script)
  os.remove(errfile)
  local body, rc = out:match('^(.-)(%d+)\n$')
  return body, stderr, tonumber(rc)
end

-- Start fn in a new OS thread with its own Lua state (luv). fn must not use
-- upvalues; it receives package.path, package.cpath, then the extra
-- arguments (strings, numbers, booleans). Returns the luv thread (join it),
-- or nil when luv threads are unavailable in this runtime.
function helpers.start_thread(fn, ...)
  if not (uv and uv.new_thread) then return nil end
  return uv.new_thread(fn, package.path, package.cpath, ...)
end

function helpers.has_threads()
  return uv ~= nil and uv.new_thread ~= nil
end

-- A fresh temporary file name (the file is removed; threads write it).
function helpers.tmpname()
  local name = os.tmpname()
  os.remove(name)
  return name
end

helpers.read_file = read_file

-- Collect pgpool's log lines in this Lua state instead of stderr. Returns the
-- list; each entry is { level = ..., message = ... }. Stop with
-- pgpool.on_log(nil).
function helpers.capture_log(pgpool)
  local lines = {}
  pgpool.on_log(function(level, message)
    lines[#lines + 1] = { level = level, message = message }
  end)
  return lines
end

-- The captured lines whose message contains `text` (plain match).
function helpers.log_lines(lines, text)
  local found = {}
  for _, l in ipairs(lines) do
    if l.message:find(text, 1, true) then found[#found + 1] = l end
  end
  return found
end

-- Options for a pool of the specs: the test server, quiet logs, extra on top.
function helpers.pool_options(name, extra)
  local o = { name = name, conninfo = helpers.dsn(), log_level = 'warn' }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Plain-text search (no Lua patterns).
function helpers.contains(haystack, needle)
  return tostring(haystack):find(needle, 1, true) ~= nil
end

-- Wait (up to timeout s, default 2) until the server has n pgpool backends.
function helpers.backends_become(n, timeout)
  return helpers.wait_until(function() return helpers.count_backends('pgpool') == n end, timeout or 2)
end

-- Hooks that start each spec with its log captured (passed to on_capture)
-- and end it with every pool shut down and no pgpool backend left: for
-- before_each and after_each (busted gives those to spec files only).
function helpers.spec_isolation(pgpool, on_capture)
  local function start()
    on_capture(helpers.capture_log(pgpool))
  end
  local function finish()
    pgpool.shutdown_all{ timeout = 1 }
    pgpool.on_log(nil)
    require('luassert').is_true(helpers.backends_become(0), 'pgpool backends left open after a spec')
  end
  return start, finish
end


-- Hooks (for before_each/after_each) for specs that each run on a freshly
-- acquired connection: open configures pool `name` (pool_options with extra)
-- and passes (pool, conn) to on_open; close releases that connection and
-- shuts every pool down.
function helpers.held_connection(name, extra, on_open)
  local pgpool = require('pgpool')
  local held
  local function open()
    local pool = pgpool.configure(helpers.pool_options(name, extra))
    held = assert(pool:acquire())
    on_open(pool, held)
  end
  local function close()
    if held then held:release() end
    held = nil
    pgpool.shutdown_all{ timeout = 1 }
  end
  return open, close
end

-- Hooks (for setup/teardown) that create the table `name (tag text, n int)`
-- afresh and drop it afterwards; rows are counted by tag.
function helpers.tagged_table(name)
  local function create()
    helpers.psql(('drop table if exists %s; create table %s (tag text, n int)'):format(name, name))
  end
  local function drop()
    require('pgpool').shutdown_all{ timeout = 1 }
    helpers.psql('drop table if exists ' .. name)
  end
  local function count_rows(tag)
    return tonumber(helpers.psql(("select count(*) from %s where tag = '%s'"):format(name, tag)))
  end
  return create, drop, count_rows
end

-- True while process `pid` runs (a zombie awaiting its reaper does not).
function helpers.process_alive(pid)
  local stat = read_file('/proc/' .. tonumber(pid) .. '/stat')
  local state = stat:match('^%d+ %b() (%a)')
  return state ~= nil and state ~= 'Z'
end

-- The fault proxy (spec/support/fault_proxy.lua, a lua5.4 + luv child
-- process) between pgpool and a server on 127.0.0.1: opts.target_port
-- (default: the test server's), opts.target_host ('127.0.0.1'), opts.mode
-- ('pass') and opts.arg, opts.lifetime (s, default 120: it also exits when
-- this process does). The returned object:
--   proxy:port()             the proxy's TCP port on 127.0.0.1
--   proxy:conninfo([base])   base (default helpers.tcp_dsn()) through the proxy
--   proxy:set(mode[, arg])   switch mode; returns once the proxy applies it
--   proxy:stats()            its counters (accepted, open, upstream, cancels,
--                            to_server, to_client)
--   proxy:stop()             end it (idempotent)
-- Modes: pass, delay (arg: ms per chunk, each way), stall, drop, reset,
-- accept_close, ignore_cancel; fault_proxy.lua says what each does.
local FaultProxy = {}
FaultProxy.__index = FaultProxy

local function parse_state(text)
  local state = {}
  for name, value in (text or ''):gmatch('([%w_]+)=([^\n]*)') do
    state[name] = tonumber(value) or value
  end
  return state
end

function FaultProxy:state()
  return parse_state(read_file(self.dir .. '/state'))
end

function FaultProxy:port() return self.listen_port end

function FaultProxy:conninfo(base)
  base = base or helpers.tcp_dsn()
  return (base:gsub('host=%S+', 'host=127.0.0.1'):gsub('port=%d+', 'port=' .. self.listen_port))
end

-- Write "SEQ WORD [ARG]" to the control file (renamed into place whole);
-- false when the proxy has gone and taken its directory along.
function FaultProxy:send(word, arg)
  self.seq = self.seq + 1
  local path = self.dir .. '/control'
  local f = io.open(path .. '.tmp', 'w')
  if not f then return false end
  f:write(('%d %s %s\n'):format(self.seq, word, arg ~= nil and tostring(arg) or ''))
  f:close()
  return os.rename(path .. '.tmp', path) ~= nil
end

function FaultProxy:set(mode, arg)
  if not self:send(mode, arg) then error('fault_proxy: the proxy is gone', 2) end
  local seq, state = self.seq, nil
  if not helpers.wait_until(function()
    state = self:state()
    return (state.seq or -1) >= seq
  end, 5, 0.01) then
    error('fault_proxy: mode ' .. tostring(mode) .. ' not applied within 5 s\n' .. self:log(), 2)
  end
  if state.error then error('fault_proxy: ' .. state.error, 2) end
end

function FaultProxy:stats()
  local state = self:state()
  state.port, state.pid, state.seq, state.mode, state.error = nil, nil, nil, nil, nil
  return state
end

function FaultProxy:log()
  return read_file(self.dir .. '/log')
end

function FaultProxy:stop()
  if self.stopped then return end
  self.stopped = true
  local gone = function() return not helpers.process_alive(self.pid) end
  if self:send('stop') and not helpers.wait_until(gone, 5, 0.01) then
    os.execute('kill ' .. tonumber(self.pid))
  end
  os.execute('rm -rf ' .. shquote(self.dir))     -- it removes it itself, unless killed
end

function helpers.fault_proxy(opts)
  local target_port = opts.target_port or tonumber(helpers.tcp_dsn():match('port=(%d+)'))
  local rc, dir = helpers.run('mktemp -d "${TMPDIR:-/tmp}/pgpool-proxy.XXXXXX"')
  assert(rc == 0, 'mktemp failed: ' .. dir)
  -- $PPID, in the shell os.execute starts, is this process: the proxy's parent
  os.execute(('lua5.4 spec/support/fault_proxy.lua %s %s %d "$PPID" %s </dev/null >%s 2>&1 &')
    :format(shquote(dir), shquote(opts.target_host or '127.0.0.1'), target_port,
      tostring(opts.lifetime or 120), shquote(dir .. '/log')))
  local self = setmetatable({ dir = dir, seq = 0 }, FaultProxy)
  local started = helpers.wait_until(function() return self:state().port ~= nil end, 10, 0.01)
  if not started then
    local log = self:log()
    os.execute('rm -rf ' .. shquote(dir))
    error('fault_proxy did not start:\n' .. log, 2)
  end
  local state = self:state()
  self.listen_port, self.pid = state.port, state.pid
  if opts.mode and opts.mode ~= 'pass' then self:set(opts.mode, opts.arg) end
  return self
end

-- A streaming standby (pg_basebackup -R, spec/support/standby.sh) of the
-- test server, or of the pgserver.sh server in `primary_dir`. The object:
--   s.port, s.dir, s.conninfo   its port, directory, conninfo (on its socket)
--   s:pids()                    its postmaster's pid and its children's
--   s:freeze(), s:thaw()        SIGSTOP, SIGCONT every one of them
--   s:stop()                    pg_ctl stop -m immediate (thawed first)
--   s:start()                   pg_ctl start again, waiting until it answers
--   s:remove()                  thaw, stop and remove it (idempotent)
local Standby = {}
Standby.__index = Standby

function Standby:postmaster_pid()
  return tonumber(read_file(self.dir .. '/data/postmaster.pid'):match('^(%d+)'))
end

function Standby:pids()
  local pm = self:postmaster_pid()
  if not pm then return {} end
  local pids = { pm }
  local out = helpers.must_run(("awk '$4 == %d { print $1 }' /proc/[0-9]*/stat 2>/dev/null || true"):format(pm))
  for pid in out:gmatch('%d+') do pids[#pids + 1] = tonumber(pid) end
  return pids
end

function Standby:signal(sig)
  local pids = self:pids()
  if #pids > 0 then helpers.run(('kill -%s %s'):format(sig, table.concat(pids, ' '))) end
  return pids
end

function Standby:freeze()
  -- the postmaster first, so that it forks nothing after the list is taken
  local pm = self:postmaster_pid()
  if pm then helpers.run('kill -STOP ' .. pm) end
  self.frozen = true
  return self:signal('STOP')
end

function Standby:thaw()
  self.frozen = false
  return self:signal('CONT')
end

local function pg_ctl(self, args)
  return helpers.run(('runuser -u postgres -- %s/pg_ctl -D %s %s'):format(
    shquote(env('PGPOOL_TEST_PGBIN')), shquote(self.dir .. '/data'), args))
end

function Standby:stop()
  self:thaw()
  if self:postmaster_pid() then
    local rc, out = pg_ctl(self, '-m immediate -w -t 10 stop')
    assert(rc == 0, 'pg_ctl stop: ' .. out)
  end
end

function Standby:start()
  local rc, out = pg_ctl(self, '-l ' .. shquote(self.dir .. '/postgresql.log') .. ' -w -t 30 start')
  assert(rc == 0, 'pg_ctl start: ' .. out)
end

function Standby:remove()
  if self.removed then return end
  self.removed = true
  self:thaw()
  helpers.run('spec/support/pgserver.sh stop ' .. shquote(self.dir))
end

function helpers.standby(primary_dir)
  primary_dir = primary_dir or env('PGPOOL_TEST_DIR')
  local dir = helpers.must_run('mktemp -d "${TMPDIR:-/tmp}/pgpool-standby.XXXXXX"')
  local self = setmetatable({ dir = dir }, Standby)
  local rc, out = helpers.run(('spec/support/standby.sh start %s %s'):format(shquote(primary_dir), shquote(dir)))
  if rc ~= 0 then
    self:remove()
    error('standby did not start:\n' .. out, 2)
  end
  self.port = assert(tonumber(out:match('(%d+)%s*$')), out)
  self.conninfo = ('host=%s/sock port=%d dbname=pgpool_test user=postgres'):format(dir, self.port)
  return self
end

-- PGPOOL_TEST_STATEMENT_CACHE=N (make test-pgbouncer sets it): every pool
-- a spec configures through pgpool.configure without a statement_cache of
-- its own gets a cache of N, so that the specs' statements run prepared and
-- cached, by name, on PgBouncer's shared server connections, and
-- transaction_pooling (PGPOOL_TEST_NO_TXN_POOLING=1 leaves it off: 45 of
-- transaction_spec's cases then fail with 42P05). Child
-- processes and other threads' Lua states are left as they are. (busted
-- loads this file and pgpool afresh for each spec file; a second wrap
-- would find the option set and change nothing.)
local default_cache = tonumber(os.getenv('PGPOOL_TEST_STATEMENT_CACHE') or '')
if default_cache then
  local pgpool = require('pgpool')
  local configure = pgpool.configure
  pgpool.configure = function(opts)
    if type(opts) == 'table' and opts.statement_cache == nil and getmetatable(opts) == nil then
      local copy = {}
      for k, v in pairs(opts) do copy[k] = v end
      copy.statement_cache = default_cache
      if copy.transaction_pooling == nil then copy.transaction_pooling = os.getenv("PGPOOL_TEST_NO_TXN_POOLING") == nil end
      opts = copy
    end
    return configure(opts)      -- a tail call: misuse still raises at the spec's line
  end
end

return helpers
