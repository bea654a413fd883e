-- What a pool runs on each new connection (on_connect, like HikariCP's
-- connectionInitSql or pgx's AfterConnect), and a statement's own timeout
-- instead of the pool's query_timeout.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

local function elapsed(fn)
  local t0 = helpers.now()
  local a, b, c, d = fn()
  return helpers.now() - t0, a, b, c, d
end

describe('on_connect', function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('runs a SQL string on every new connection before it is handed out', function()
    local pool = pgpool.configure(opts('hook-string', { max = 2, on_connect = "set statement_timeout = '12345ms'" }))
    local a, b = assert(pool:acquire()), assert(pool:acquire())
    for _, conn in ipairs{ a, b } do
      assert.are.equal('12345ms', conn:query('show statement_timeout')[1].statement_timeout)
    end
    a:release(); b:release()
    assert.are.equal(2, pool:stats().created)
  end)

  it('runs a list of statements in order', function()
    local pool = pgpool.configure(opts('hook-list', { max = 1, on_connect = {
      "set application_name = 'hooked'", "set search_path = pg_catalog",
    } }))
    local res = assert(pool:query("select current_setting('application_name') as app, current_setting('search_path') as path"))
    assert.are.same({ app = 'hooked', path = 'pg_catalog' }, { app = res[1].app, path = res[1].path })
  end)

  it('counts a failing hook as a failed connect, with the server SQLSTATE, and keeps nothing', function()
    local pool = pgpool.configure(opts('hook-fails', { max = 2, log_level = 'off', on_connect = 'set no_such_setting_here = 1' }))
    local res, msg, code, info = pool:query('select 1')
    assert.is_nil(res)
    assert.are.equal('connect', code)
    assert.truthy(msg:find('on_connect failed', 1, true), msg)
    assert.are.equal('42704', info.sqlstate)
    local st = pool:stats()
    assert.are.equal(0, st.total)
    assert.are.equal(0, st.created)
    assert.truthy(st.connect_errors >= 1)
    assert.truthy(helpers.backends_become(0, 5))
  end)

  it('is bounded by connect_timeout', function()
    local pool = pgpool.configure(opts('hook-slow', { max = 1, log_level = 'off', connect_timeout = 0.5, acquire_timeout = 5,
      on_connect = 'select pg_sleep(30)' }))
    local took, res, _, code = elapsed(function() return pool:query('select 1') end)
    assert.is_nil(res)
    assert.are.equal('connect', code)
    assert.truthy(took < 6, ('took %.2f s'):format(took))
  end)

  it('refuses what it cannot run', function()
    for _, bad in ipairs{ 42, {}, { 'select 1', 7 }, 'select 1\0', { 'select 1', n = 1 } } do
      assert.has_error(function() pgpool.configure(opts('hook-bad', { on_connect = bad })) end)
    end
  end)
end)

describe('a statement table { sql, timeout = t }', function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('bounds that statement tighter than the pool', function()
    local pool = pgpool.configure(opts('call-timeout', { max = 1 }))
    local took, res, msg, code = elapsed(function() return pool:query({ 'select pg_sleep(5)', timeout = 0.2 }) end)
    assert.is_nil(res, msg)
    assert.are.equal('timeout', code)
    assert.truthy(took < 3, ('took %.2f s'):format(took))
    assert.truthy(pool:query('select 1'), 'the connection is usable again')
  end)

  it('lets one statement run longer than the pool allows, with its parameters after the table', function()
    local pool = pgpool.configure(opts('call-longer', { max = 1, query_timeout = 0.2 }))
    assert.are.equal('timeout', select(3, pool:query('select pg_sleep(0.6)')))
    local res = assert(pool:query({ 'select pg_sleep(0.6)::text as s, $1::int as v', timeout = 5 }, 7))
    assert.are.equal(7, res[1].v)
    assert.truthy(pool:exec({ 'select pg_sleep(0.6)', timeout = 0 }), 'timeout 0: none')
  end)

  it('works on a held connection and on the default pool', function()
    local pool = pgpool.configure(opts('call-conn', { max = 1 }))
    local conn = assert(pool:acquire())
    assert.are.equal('timeout', select(3, conn:query({ 'select pg_sleep(5)', timeout = 0.2 })))
    assert.are.equal(1, conn:query({ 'select $1::int as v', timeout = 1 }, 1)[1].v)
    assert.truthy(conn:exec({ 'select 1', timeout = 1 }))
    conn:release()
    pgpool.configure(opts('default', { max = 1 }))
    assert.are.equal('timeout', select(3, pgpool.query({ 'select pg_sleep(5)', timeout = 0.2 })))
  end)

  it('refuses a timeout or SQL it cannot use, naming the function', function()
    local pool = pgpool.configure(opts('call-bad', { max = 1 }))
    for _, case in ipairs{
      { { 'select 1', timeout = -1 }, 'timeout must be >= 0' },
      { { 'select 1', timeout = 0 / 0 }, 'timeout must be >= 0' },
      { { 'select 1', timeout = '1' }, 'timeout must be a number' },
      { { timeout = 1 }, "statement table's %[1%] must be the sql string" },
      { { 'select 1\0', timeout = 1 }, 'NUL' },
    } do
      local ok, err = pcall(pool.query, pool, case[1])
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'pool:query'", err)
      assert.matches(case[2], err)
    end
    assert.truthy(pool:query({ 'select 1', timeout = math.huge }))
  end)
end)
