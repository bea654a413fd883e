-- Every wait of a statement has a deadline, the cancel included: a server
-- that answers neither the statement nor its cancel costs query_timeout plus
-- the 5 s cancel grace, never more, and the connection is given up. Huge
-- timeouts wait without a limit (no overflow), and the connections pq_connect
-- opens carry TCP keepalive defaults.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

-- The postmaster's pid (first line of postmaster.pid).
local function postmaster_pid()
  local f = assert(io.open(assert(os.getenv('PGPOOL_TEST_DIR')) .. '/data/postmaster.pid'))
  local pid = f:read('*l')
  f:close()
  return assert(tonumber(pid))
end

-- PgBouncer's pid, in the PgBouncer run.
local function pgbouncer_pid()
  local f = assert(io.open(assert(os.getenv('PGPOOL_TEST_DIR')) .. '/pgbouncer/pgbouncer.pid'))
  local pid = f:read('*l')
  f:close()
  return assert(tonumber(pid))
end

describe('the cancel of a timed-out statement', function()
  if os.getenv('PGPOOL_TEST_RUNTIME') ~= 'lua5.4' then
    pending('stops the shared test server: runs once, under lua5.4')
    return
  end

  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('gives up at query_timeout plus the grace, with "timeout", when the postmaster and the backend are stopped', function()
    local pool = pgpool.configure(opts('cancel-frozen', { max = 1, query_timeout = 0.5, log_level = 'off' }))
    local conn = assert(pool:acquire())
    -- Through PgBouncer, it is what pgpool talks to: stopped, it answers
    -- neither (the server's backend for the statement is not known before).
    local pids = helpers.via_pgbouncer() and pgbouncer_pid() or postmaster_pid() .. ' ' .. conn:backend_pid()
    os.execute('kill -STOP ' .. pids)        -- neither the statement nor a cancel is answered
    -- a watchdog resumes them in any case, so that a hang cannot outlive the spec
    os.execute('(sleep 15; kill -CONT ' .. pids .. ') >/dev/null 2>&1 &')
    local t0 = helpers.now()
    local ok, res, msg, code = pcall(conn.query, conn, 'select pg_sleep(3)')
    local took = helpers.now() - t0
    os.execute('kill -CONT ' .. pids)
    assert.is_true(ok, res)
    assert.is_nil(res)
    assert.are.equal('timeout', code, msg)
    assert.is_true(took >= 0.5 and took < 7, 'gave up after ' .. took .. ' s')
    conn:release()                           -- given up: closed, not reused
    local st = pool:stats()
    assert.are.equal(1, st.closed_broken)
    assert.are.equal(0, st.total)
    conn = assert(pool:acquire{ timeout = 5 })
    assert.truthy(conn:query('select 1'))
    conn:release()
  end)

  it('still cancels a long statement of a healthy server at query_timeout', function()
    local pool = pgpool.configure(opts('cancel-healthy', { max = 1, query_timeout = 0.2 }))
    local conn = assert(pool:acquire())
    local t0 = helpers.now()
    local res, msg, code = conn:query('select pg_sleep(5)')
    assert.is_nil(res)
    assert.are.equal('timeout', code, msg)
    assert.is_true(helpers.now() - t0 < 2)
    assert.are.equal(1, assert(conn:query('select 1 as one'))[1].one)
    conn:release()
    assert.are.equal(0, pool:stats().closed_broken)
  end)
end)

describe('deadlines', function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('waits without overflow for a query_timeout and connect_timeout of 31 years', function()
    local pool = pgpool.configure(opts('deadline-huge', { max = 1, query_timeout = 1e9, connect_timeout = 1e9 }))
    local conn = assert(pool:acquire())
    assert.truthy(conn:query('select pg_sleep(0.1)'))
    assert.truthy(conn:exec('select 1; select 2'))
    conn:release()
  end)
end)

describe('TCP keepalive', function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  -- Seconds left on the keepalive timer of the client socket at local port
  -- `port` (ss shows "timer:(keepalive,29sec,0)" or "1min39sec"), or nil.
  local function keepalive_left(port)
    local rc, out = helpers.run('ss -tnoH state established "sport = :' .. port .. '"')
    assert(rc == 0, out)
    local timer = out:match('timer:%(keepalive,([^,]+),')
    if not timer then return nil end
    return 60 * tonumber(timer:match('(%d+)min') or 0) + tonumber(timer:match('(%d+)sec') or 0)
  end

  local function keepalive_of(name, conninfo)
    local pool = pgpool.configure({ name = name, conninfo = conninfo .. ' application_name=' .. name,
      max = 1, log_level = 'warn' })
    local conn = assert(pool:acquire())
    local port = helpers.client_port(conn, name)
    local left = keepalive_left(port)
    conn:release()
    return left
  end

  it('probes an idle TCP connection after 30 s, unless the conninfo sets its own keepalives', function()
    if helpers.run('command -v ss') ~= 0 then pending('ss (iproute2) is not installed') return end
    local left = keepalive_of('keepalive', helpers.tcp_dsn())
    assert.is_true(left ~= nil and left <= 30, 'keepalive timer ' .. tostring(left))
    left = keepalive_of('keepalive-own', helpers.tcp_dsn() .. ' keepalives_idle=100')
    assert.is_true(left ~= nil and left > 60 and left <= 100, 'keepalive timer ' .. tostring(left))
    assert.is_nil(keepalive_of('keepalive-off', helpers.tcp_dsn() .. ' keepalives=0'))
  end)
end)
