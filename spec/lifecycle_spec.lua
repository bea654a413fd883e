-- Lifecycle: shutdown, process exit, configuration from the environment,
-- logging and the observing functions.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts, contains, backends_become = helpers.pool_options, helpers.contains, helpers.backends_become

local log
local start_spec, finish_spec = helpers.spec_isolation(pgpool, function(lines) log = lines end)
before_each(start_spec)
after_each(finish_spec)

describe('shutdown', function()
  it('returns true at once and closes idle connections when nothing is in use', function()
    local pool = pgpool.configure(opts('sd-idle', { max = 3 }))
    local a, b = assert(pool:acquire()), assert(pool:acquire())
    a:release()
    b:release()
    assert.are.equal(2, helpers.count_backends('pgpool'))
    local t0 = helpers.now()
    assert.is_true(pool:shutdown{ timeout = 1 })
    assert.is_true(helpers.now() - t0 < 0.5)
    assert.is_true(backends_become(0))
    assert.is_true(pool:is_shut_down())
  end)

  it('waits for a connection released before the deadline and returns true', function()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    local pool = pgpool.configure(opts('sd-drain', { max = 2 }))
    local function holder(path, cpath, name)
      package.path, package.cpath = path, cpath
      local p = assert(require('pgpool').pool(name))
      local conn = assert(p:acquire())
      conn:query('select pg_sleep(0.3)')
      conn:release()
    end
    local t = helpers.start_thread(holder, 'sd-drain')
    assert.is_true(helpers.wait_until(function() return pool:stats().in_use == 1 end, 3))
    local t0 = helpers.now()
    local ok, msg = pool:shutdown{ timeout = 3 }
    local took = helpers.now() - t0
    t:join()
    assert.is_true(ok, msg)
    assert.is_true(took < 2, 'shutdown took ' .. took .. ' s')
    assert.are.equal(0, pool:stats().total)
    assert.is_true(backends_become(0))
  end)

  it('closes a connection still in use at the deadline and returns nil, msg', function()
    local pool = pgpool.configure(opts('sd-force', { max = 2 }))
    local held = assert(pool:acquire())
    local t0 = helpers.now()
    local ok, msg = pool:shutdown{ timeout = 0.3 }
    local took = helpers.now() - t0
    assert.is_nil(ok)
    assert.are.equal('string', type(msg))
    assert.is_true(took >= 0.25 and took < 1, 'shutdown took ' .. took .. ' s')
    assert.is_true(backends_become(0))
    -- the holder gets "shutdown" back, not a raise
    local res, qmsg, code = held:query('select 1')
    assert.is_nil(res)
    assert.are.equal('shutdown', code)
    assert.truthy(contains(qmsg, 'sd-force'), qmsg)
    local eok, _, ecode = held:exec('select 1')
    assert.is_nil(eok)
    assert.are.equal('shutdown', ecode)
    assert.is_true(held:release())
    assert.are.equal(0, pool:stats().total)
  end)

  it('closes a connection busy at the deadline once its statement ends', function()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    local pool = pgpool.configure(opts('sd-busy', { max = 1 }))
    local function busy(path, cpath, name, outfile)
      package.path, package.cpath = path, cpath
      local p = assert(require('pgpool').pool(name))
      local conn = assert(p:acquire())
      local first = conn:query('select pg_sleep(0.6)')
      local second, _, code = conn:query('select 1')
      conn:release()
      local f = io.open(outfile, 'w')
      f:write(tostring(first ~= nil), ' ', tostring(second ~= nil), ' ', tostring(code))
      f:close()
    end
    local out = helpers.tmpname()
    local t = helpers.start_thread(busy, 'sd-busy', out)
    assert.is_true(helpers.wait_until(function()
      return helpers.psql("select count(*) from pg_stat_activity where application_name = 'pgpool' "
        .. "and query like 'select pg_sleep%' and state = 'active'") == '1'
    end, 3))
    local t0 = helpers.now()
    local ok = pool:shutdown{ timeout = 0.1 }
    assert.is_nil(ok)
    assert.is_true(helpers.now() - t0 < 0.5, 'shutdown waited for the running statement')
    t:join()
    -- the running statement finished; the next one was refused
    assert.are.equal('true false shutdown', helpers.read_file(out))
    os.remove(out)
    assert.is_true(backends_become(0))
    assert.are.equal(0, pool:stats().total)
  end)

  it('rejects acquires afterwards with code "shutdown"', function()
    local pool = pgpool.configure(opts('sd-reject'))
    assert.is_true(pool:shutdown{ timeout = 1 })
    local conn, msg, code = pool:acquire{ timeout = 1 }
    assert.is_nil(conn)
    assert.are.equal('shutdown', code)
    assert.truthy(contains(msg, 'sd-reject'), msg)
    local res, _, qcode = pool:query('select 1')
    assert.is_nil(res)
    assert.are.equal('shutdown', qcode)
    local p, _, pcode = pgpool.pool('sd-reject')
    assert.is_nil(p)
    assert.are.equal('shutdown', pcode)
  end)

  it('wakes a waiter blocked in acquire with code "shutdown"', function()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    local pool = pgpool.configure(opts('sd-waiter', { max = 1 }))
    local held = assert(pool:acquire())
    local function waiter(path, cpath, name, outfile)
      package.path, package.cpath = path, cpath
      local p = assert(require('pgpool').pool(name))
      local conn, _, code = p:acquire{ timeout = 5 }
      if conn then conn:release() end
      local f = io.open(outfile, 'w')
      f:write(tostring(code))
      f:close()
    end
    local out = helpers.tmpname()
    local t = helpers.start_thread(waiter, 'sd-waiter', out)
    assert.is_true(helpers.wait_until(function() return pool:stats().waiting == 1 end, 3))
    pool:shutdown{ timeout = 0.3 }
    local t0 = helpers.now()
    t:join()
    assert.is_true(helpers.now() - t0 < 1, 'the waiter was not woken')
    assert.are.equal('shutdown', helpers.read_file(out))
    os.remove(out)
    held:release()
  end)

  it('is idempotent', function()
    local pool = pgpool.configure(opts('sd-twice', { log_level = 'info' }))
    assert.truthy(pool:query('select 1'))
    assert.is_true(pool:shutdown{ timeout = 1 })
    assert.is_true(pool:shutdown{ timeout = 1 })
    assert.is_true(pgpool.shutdown_all{ timeout = 1 })
    assert.is_true(pgpool.shutdown_all{ timeout = 1 })
    assert.are.equal(1, #helpers.log_lines(log, 'pool "sd-twice": pool closed'))
  end)

  it('shuts the default pool down and lets it be configured again', function()
    assert.is_true(pgpool.shutdown())   -- no default pool yet: a no-op
    pgpool.configure(opts('default'))
    assert.are.equal(1, pgpool.query('select 1 as x')[1].x)
    assert.is_true(pgpool.shutdown{ timeout = 1 })
    local res, _, code = pgpool.query('select 1 as x')
    assert.is_nil(res)
    assert.are.equal('shutdown', code)
    pgpool.configure(opts('default', { max = 3 }))
    assert.are.equal(2, pgpool.query('select 2 as x')[1].x)
    assert.are.equal(3, pgpool.stats().max)
  end)
end)

describe('process exit', function()
  -- Each child connects with log_min_messages=debug1 so that the server logs
  -- "unexpected EOF on client connection" for every session that ends
  -- without a Terminate message (at the default level it would log that only
  -- for sessions inside a transaction). Through PgBouncer the child's peer
  -- is PgBouncer, which logs every client gone without a Terminate (and
  -- refuses startup options): its log is read instead (helpers.peer_log_*).
  local CHILD = [[
    local pgpool = require 'pgpool'
    local pool = pgpool.configure{ name = 'exit', log_level = 'off',
      conninfo = os.getenv('PGPOOL_TEST_DSN') ..
        (os.getenv('PGPOOL_TEST_VIA') == 'pgbouncer' and '' or " options='-c log_min_messages=debug1'") }
    local a, b, c = assert(pool:acquire()), assert(pool:acquire()), assert(pool:acquire())
    assert(a:query('select 1'))
    b:release()
    c:release()
    HELD = a
    %s
    io.stdout:write('opened ', pool:stats().created, '\n')
    io.stdout:flush()
    %s
  ]]

  local function run_child(before, ending, expect_rc)
    assert.is_true(backends_become(0))
    local log_size = helpers.peer_log_size()
    local out, err, rc = helpers.run_lua(CHILD:format(before or '', ending or ''))
    assert.are.equal(expect_rc or 0, rc, 'child failed: ' .. err)
    assert.truthy(contains(out, 'opened 3'), out .. err)
    assert.is_true(backends_become(0), 'the child left backends open')
    helpers.sleep(0.05)   -- let the backends finish writing to the log
    return helpers.peer_log_since(log_size), out
  end

  it('the server logs an unexpected EOF for a process killed with connections open (control)', function()
    local server_log = run_child(nil, [[
      local pid = io.open('/proc/self/stat'):read('*l'):match('^%d+')
      os.execute('kill -9 ' .. pid)
    ]], 137)
    assert.truthy(contains(server_log, helpers.PEER_EOF), server_log)
  end)

  it('closes every connection cleanly when the script ends normally', function()
    local server_log = run_child()
    assert.is_nil(server_log:find(helpers.PEER_EOF, 1, true), server_log)
  end)

  it('closes every connection cleanly on os.exit(0) without closing the state', function()
    local server_log = run_child(nil, 'os.exit(0)')
    assert.is_nil(server_log:find(helpers.PEER_EOF, 1, true), server_log)
  end)

  it('closes every connection cleanly on os.exit(0, true)', function()
    local server_log = run_child(nil, 'os.exit(0, true)')
    assert.is_nil(server_log:find(helpers.PEER_EOF, 1, true), server_log)
  end)

  it('closes a connection held inside an open transaction cleanly on os.exit(0)', function()
    local server_log = run_child("assert(a:exec('begin; select 1'))", 'os.exit(0)')
    assert.is_nil(server_log:find(helpers.PEER_EOF, 1, true), server_log)
  end)
end)

describe('configuration from the environment', function()
  local QUERY = [[
    local pgpool = require 'pgpool'
    local res = assert(pgpool.query('select 41 + 1 as x, current_database() as db, ' ..
      "current_setting('application_name') as app"))
    print(res[1].x, res[1].db, res[1].app)
  ]]

  local function pg_env()
    return {
      PGHOST = os.getenv('PGPOOL_TEST_SOCKDIR'),
      PGPORT = os.getenv('PGPOOL_TEST_PORT'),
      PGDATABASE = 'pgpool_test',
      PGUSER = 'postgres',
    }
  end

  it('configures the default pool from PGPOOL_URL on the first module-level call', function()
    local out, err, rc = helpers.run_lua(QUERY, {
      env = { PGPOOL_URL = helpers.dsn() },
      unset = { 'DATABASE_URL', 'PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER' },
    })
    assert.are.equal(0, rc, err)
    assert.are.equal('42\tpgpool_test\tpgpool\n', out)
  end)

  it('uses DATABASE_URL when PGPOOL_URL is unset', function()
    local out, err, rc = helpers.run_lua(QUERY, {
      env = { DATABASE_URL = helpers.dsn() },
      unset = { 'PGPOOL_URL', 'PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER' },
    })
    assert.are.equal(0, rc, err)
    assert.are.equal('42\tpgpool_test\tpgpool\n', out)
  end)

  it('prefers PGPOOL_URL over DATABASE_URL', function()
    local out, err, rc = helpers.run_lua(QUERY, {
      env = { PGPOOL_URL = helpers.dsn(), DATABASE_URL = 'host=127.0.0.1 port=1 dbname=wrong' },
      unset = { 'PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER' },
    })
    assert.are.equal(0, rc, err)
    assert.are.equal('42\tpgpool_test\tpgpool\n', out)
  end)

  it("falls back to libpq's PG* variables when no URL is set", function()
    local out, err, rc = helpers.run_lua(QUERY, { env = pg_env(), unset = { 'PGPOOL_URL', 'DATABASE_URL' } })
    assert.are.equal(0, rc, err)
    assert.are.equal('42\tpgpool_test\tpgpool\n', out)
  end)

  it('keeps an application_name set in the conninfo', function()
    local pool = pgpool.configure(opts('appname', { conninfo = helpers.dsn() .. ' application_name=myapp' }))
    assert.are.equal('myapp', pool:query("select current_setting('application_name') as a")[1].a)
    assert.are.equal(0, helpers.count_backends('pgpool'))
    assert.are.equal(1, helpers.count_backends('myapp'))
  end)
end)

describe('logging', function()
  local function lines_for(pool_name, text)
    return helpers.log_lines(log, 'pool "' .. pool_name .. '": ' .. text)
  end

  it('delivers "pool initialized" and "new connection" lines at level info to on_log', function()
    local pool = pgpool.configure(opts('log-info', { log_level = 'info', max = 7 }))
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    conn:release()
    local init = lines_for('log-info', 'pool initialized')
    assert.are.equal(1, #init)
    assert.are.equal('info', init[1].level)
    assert.truthy(contains(init[1].message, 'max 7'), init[1].message)
    local new = lines_for('log-info', 'new connection')
    assert.are.equal(1, #new)
    assert.are.equal('info', new[1].level)
    assert.truthy(contains(new[1].message, tostring(pid)), new[1].message)
    assert.truthy(contains(new[1].message, '1/7'), new[1].message)
    assert.matches('^pgpool:', new[1].message)
  end)

  it('filters info lines with log_level = "warn"', function()
    local pool = pgpool.configure(opts('log-warn', { log_level = 'warn' }))
    assert.truthy(pool:query('select 1'))
    pool:stats()
    assert.are.equal(0, #helpers.log_lines(log, 'pool "log-warn"'))
  end)

  it('logs a slow query at warn with the SQL but not its parameters, and counts it', function()
    local pool = pgpool.configure(opts('log-slow', { slow_query = 0.05 }))
    assert.truthy(pool:query('select pg_sleep(0.1), $1::text as secret', 'param-value-xyz'))
    assert.truthy(pool:query('select 1'))
    local slow = lines_for('log-slow', 'slow query')
    assert.are.equal(1, #slow)
    assert.are.equal('warn', slow[1].level)
    assert.truthy(contains(slow[1].message, 'select pg_sleep(0.1)'), slow[1].message)
    assert.is_nil(slow[1].message:find('param-value-xyz', 1, true), slow[1].message)
    assert.are.equal(1, pool:stats().slow_queries)
  end)

  it('logs a connection error at level error', function()
    local pool = pgpool.configure{ name = 'log-error', conninfo = 'host=127.0.0.1 port=1 dbname=x',
      log_level = 'info' }
    assert.is_nil(pool:acquire{ timeout = 2 })
    local errs = lines_for('log-error', 'connection error')
    assert.are.equal(1, #errs)
    assert.are.equal('error', errs[1].level)
  end)

  it('logs "pool closed" at shutdown', function()
    local pool = pgpool.configure(opts('log-closed', { log_level = 'info' }))
    pool:shutdown{ timeout = 1 }
    assert.are.equal(1, #lines_for('log-closed', 'pool closed'))
  end)

  it('writes log lines to stderr when no on_log function is set', function()
    local code = [[
      local pgpool = require 'pgpool'
      local pool = pgpool.configure{ name = 'stderr', conninfo = os.getenv('PGPOOL_TEST_DSN'), log_level = 'info' }
      assert(pool:query('select 1'))
      pgpool.on_log(function() end)
      assert(pool:query('select 1'))
      pgpool.configure{ name = 'silenced', conninfo = os.getenv('PGPOOL_TEST_DSN') }
    ]]
    local _, err, rc = helpers.run_lua(code)
    assert.are.equal(0, rc, err)
    assert.truthy(contains(err, 'pgpool: [info] pool "stderr": new connection'), err)
    assert.is_nil(err:find('silenced', 1, true), err)
  end)
end)

describe('health and metrics', function()
  it('reports ok for an unused pool and a fully used one nobody waits for, critical once shut down', function()
    local pool = pgpool.configure(opts('health', { max = 1 }))
    local h = pool:health()
    assert.are.equal('ok', h.status)
    assert.are.same({}, h.reasons)
    local conn = assert(pool:acquire())
    h = pool:health()
    assert.are.equal('ok', h.status)    -- busy is not unhealthy (spec/health_spec.lua)
    assert.are.equal(1, h.utilization)
    conn:release()
    assert.is_true(pool:shutdown{ timeout = 1 })
    h = pool:health()
    assert.are.equal('critical', h.status)
    assert.truthy(contains(table.concat(h.reasons, '; '), 'pool is shut down'))
  end)

  it('exposes each configured pool in the Prometheus text', function()
    local pool = pgpool.configure(opts('metrics', { max = 4 }))
    assert.truthy(pool:query('select 1'))
    local text = pgpool.metrics()
    local pid = require('pgpool.core').pid()
    assert.truthy(contains(text, 'pgpool_connections_open{pool="metrics",pid="' .. pid .. '"} 1\n'), text)
    assert.truthy(contains(text, 'pgpool_connections_max{pool="metrics",pid="' .. pid .. '"} 4\n'), text)
    assert.truthy(contains(text, 'pgpool_queries_total{pool="metrics",pid="' .. pid .. '"} 1\n'), text)
    assert.truthy(contains(text, '# TYPE pgpool_acquired_total counter'), text)
  end)
end)
