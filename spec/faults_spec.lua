-- Faults a real server can show: a restart while the pool holds idle and
-- checked-out connections, and the server down for a while.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

-- pg_ctl on the test server (as the postgres user, like pgserver.sh).
local function pg_ctl(action)
  local dir = assert(os.getenv('PGPOOL_TEST_DIR'))
  local bin = os.getenv('PGPOOL_TEST_PGBIN') or '/usr/lib/postgresql/15/bin'
  local cmd = string.format("runuser -u postgres -- %s/pg_ctl -D %s/data -l %s -m fast -w -t 30 %s >/dev/null 2>&1",
    bin, dir, assert(os.getenv('PGPOOL_TEST_LOG')), action)
  local ok = os.execute(cmd)
  assert(ok == true or ok == 0, 'pg_ctl ' .. action .. ' failed')
end

describe('faults', function()
  if os.getenv('PGPOOL_TEST_RUNTIME') ~= 'lua5.4' then
    pending('restarts the shared test server: runs once, under lua5.4')
    return
  end

  after_each(function()
    pgpool.shutdown_all{ timeout = 1 }
    if not pcall(helpers.psql, 'select 1') then pg_ctl('start') end
  end)

  it('hands out no connection the server closed in a restart', function()
    local pool = pgpool.configure(opts('restart-idle', { max = 3 }))
    local held = {}
    for i = 1, 3 do held[i] = assert(pool:acquire()) end
    for i = 1, 3 do held[i]:release() end
    pg_ctl('restart')
    for i = 1, 3 do
      held[i] = assert(pool:acquire())
      local res, msg = held[i]:query('select 1 as one')
      assert.truthy(res, msg)
    end
    for i = 1, 3 do held[i]:release() end
    local st = pool:stats()
    assert.are.equal(3, st.closed_broken)
    assert.are.equal(6, st.created)
    assert.are.equal(3, st.total)
  end)

  it('returns nil, msg, code for a query on a connection lost in a restart, then replaces it', function()
    local pool = pgpool.configure(opts('restart-held', { max = 1 }))
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    pg_ctl('restart')
    local res, msg, code = conn:query('select 1')
    assert.is_nil(res)
    assert.is_string(msg)
    assert.truthy(code == '57P01' or code == 'closed', 'code ' .. tostring(code))
    conn:release()
    assert.are.equal(1, pool:stats().closed_broken)
    conn = assert(pool:acquire{ timeout = 2 })
    assert.are_not.equal(pid, conn:backend_pid())
    assert.truthy(conn:query('select 1'))
    conn:release()
  end)

  it('gives a connection up when its server answers neither a query nor its cancel', function()
    local pool = pgpool.configure(opts('frozen', { max = 1, query_timeout = 0.3, log_level = 'off' }))
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    os.execute('kill -STOP ' .. pid)          -- the backend answers nothing now
    local t0 = helpers.now()
    local res, msg, code = conn:query('select 1')
    local took = helpers.now() - t0
    os.execute('kill -CONT ' .. pid)
    assert.is_nil(res)
    assert.are.equal('timeout', code)
    assert.truthy(msg:find('no answer', 1, true), msg)
    assert.is_true(took >= 5 and took < 8, 'gave up after ' .. took .. ' s')
    conn:release()                             -- still busy: closed, not reused
    local st = pool:stats()
    assert.are.equal(1, st.closed_broken)
    assert.are.equal(0, st.total)
    conn = assert(pool:acquire())
    assert.truthy(conn:query('select 1'))
    conn:release()
  end)

  it('fails acquires with "connect" while the server is down, reports it, and recovers', function()
    local pool = pgpool.configure(opts('down', { max = 2, connect_timeout = 1, log_level = 'off' }))
    assert(pool:acquire()):release()
    pg_ctl('stop')
    local t0 = helpers.now()
    local conn, msg, code = pool:acquire{ timeout = 2 }
    assert.is_nil(conn)
    assert.are.equal('connect', code)
    assert.is_true(#msg > 0)
    assert.is_true(helpers.now() - t0 < 1.5, 'a refused connection must fail fast')
    local st = pool:stats()
    assert.are.equal(0, st.total)
    assert.is_true(st.connect_failures >= 1)
    local health = pool:health()
    assert.are.equal('critical', health.status)
    pg_ctl('start')
    conn = assert(pool:acquire{ timeout = 2 })
    assert.truthy(conn:query('select 1'))
    conn:release()
    assert.are.equal(0, pool:stats().connect_failures)
    assert.are.equal('ok', pool:health().status)
  end)
end)
