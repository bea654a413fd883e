-- Pool behaviour: the singleton, reuse, the cap, FIFO waiters, rollback on
-- release, __gc/<close>, idle closing, min top-up, broken connections,
-- option checks and stats. Runs against the server of spec/support/with-pg.sh.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts, backends_become = helpers.pool_options, helpers.backends_become

local IS_54 = _VERSION == 'Lua 5.4'

-- Options for a test pool: quiet by default, overridable.
-- Whether conn is outside any transaction block: SAVEPOINT fails with 25P01 there.
local function outside_transaction(conn)
  local ok, _, code = conn:exec('savepoint pgpool_probe')
  if ok then conn:exec('rollback') end
  return not ok and code == '25P01'
end

local log
local start_spec, finish_spec = helpers.spec_isolation(pgpool, function(lines) log = lines end)
before_each(start_spec)
after_each(finish_spec)

describe('configure', function()
  it('returns the same pool for the same options (one pool, shared connections)', function()
    local a = pgpool.configure(opts('single', { max = 3 }))
    local b = pgpool.configure(opts('single', { max = 3 }))
    assert.are.equal('single', a:name())
    assert.are.equal(a:name(), b:name())
    assert.truthy(a:query('select 1'))
    assert.truthy(b:query('select 1'))
    local st = a:stats()
    assert.are.equal(1, st.created)
    assert.are.equal(2, b:stats().acquired)
    assert.are.equal(1, helpers.count_backends('pgpool'))
    local _, n = pgpool.metrics():gsub('pgpool_connections_open{pool="single",pid="%d+"}', '')
    assert.are.equal(1, n)
  end)

  it('treats omitted options as their defaults when comparing', function()
    local a = pgpool.configure(opts('single-defaults'))
    local b = pgpool.configure(opts('single-defaults', { max = 20, min = 0, idle_timeout = 30 }))
    assert.are.equal(a:name(), b:name())
  end)

  it('raises "already configured" for different options on a configured name', function()
    pgpool.configure(opts('single-diff', { max = 3 }))
    local ok, err = pcall(pgpool.configure, opts('single-diff', { max = 4 }))
    assert.is_false(ok)
    assert.matches('already configured', err)
    assert.matches('single%-diff', err)
    -- the original pool is untouched
    assert.are.equal(3, pgpool.pool('single-diff'):stats().max)
  end)

  it('accepts different options for a name after its shutdown', function()
    local old = pgpool.configure(opts('single-again', { max = 3 }))
    assert.is_true(old:shutdown{ timeout = 1 })
    local new = pgpool.configure(opts('single-again', { max = 5 }))
    assert.are.equal(5, new:stats().max)
    assert.truthy(new:query('select 1'))
    -- the old handle still refers to the shut-down pool
    local conn, _, code = old:acquire{ timeout = 0.1 }
    assert.is_nil(conn)
    assert.are.equal('shutdown', code)
  end)

  it('opens no connection before the first acquire when min = 0', function()
    local pool = pgpool.configure(opts('lazy'))
    helpers.sleep(0.1)
    assert.are.equal(0, pool:stats().total)
    assert.are.equal(0, helpers.count_backends('pgpool'))
  end)

  it('pgpool.pool(name) returns nil, msg, "unknown" for a name never configured', function()
    local p, msg, code = pgpool.pool('never-configured')
    assert.is_nil(p)
    assert.are.equal('unknown', code)
    assert.matches('never%-configured', msg)
  end)

  describe('rejects bad options, naming the key:', function()
    local cases = {
      { 'unknown key', { bogus_option = 1 }, 'bogus_option' },
      { 'max = 0', { max = 0 }, 'max' },
      { 'min > max', { max = 2, min = 3 }, 'min' },
      { 'negative idle_timeout', { idle_timeout = -1 }, 'idle_timeout' },
      { 'negative acquire_timeout', { acquire_timeout = -0.5 }, 'acquire_timeout' },
      { 'max = "x"', { max = 'x' }, 'max' },
      { 'max = 1.5', { max = 1.5 }, 'max' },
      { 'idle_timeout = inf', { idle_timeout = math.huge }, 'idle_timeout' },
      { 'log_level = "loud"', { log_level = 'loud' }, 'log_level' },
      { 'conninfo = 5', { conninfo = 5 }, 'conninfo' },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        local o = opts('bad-options', case[2])
        local ok, err = pcall(pgpool.configure, o)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("'" .. case[3] .. "'", 1, true),
          'error does not name ' .. case[3] .. ': ' .. tostring(err))
        assert.is_nil((pgpool.pool('bad-options')))
      end)
    end
  end)
end)

describe('connection reuse', function()
  it('runs 100 sequential operations on exactly one server connection', function()
    local pool = pgpool.configure(opts('default', { max = 5 }))
    for i = 1, 34 do
      assert.are.equal(i, pgpool.query('select $1::int as i', i)[1].i)
    end
    for i = 1, 33 do
      assert.are.equal(i, pool:query('select $1::int as i', i)[1].i)
    end
    for i = 1, 33 do
      local conn = assert(pool:acquire())
      assert.are.equal(i, conn:query('select $1::int as i', i)[1].i)
      conn:release()
    end
    local st = pool:stats()
    assert.are.equal(1, st.created)
    assert.are.equal(100, st.acquired)
    assert.are.equal(100, st.released)
    assert.are.equal(1, helpers.count_backends('pgpool'))
  end)

  it('hands the most recently released connection out again', function()
    local pool = pgpool.configure(opts('reuse', { max = 3 }))
    local a, b = assert(pool:acquire()), assert(pool:acquire())
    local pid_b = b:backend_pid()
    a:release()
    b:release()
    local c = assert(pool:acquire())
    assert.are.equal(pid_b, c:backend_pid())
    c:release()
  end)
end)

describe('the cap', function()
  it('times out the acquire beyond max with a message describing the pool', function()
    local pool = pgpool.configure(opts('cap', { max = 2 }))
    local a, b = assert(pool:acquire()), assert(pool:acquire())
    local t0 = helpers.now()
    local conn, msg, code = pool:acquire{ timeout = 0.5 }
    local took = helpers.now() - t0
    assert.is_nil(conn)
    assert.are.equal('timeout', code)
    assert.is_true(took >= 0.45 and took < 1.0, 'waited ' .. took .. ' s')
    assert.truthy(msg:find('timeout after 0.5 s waiting for a connection (pool "cap": 2/2 in use', 1, true), msg)
    local st = pool:stats()
    assert.are.equal(1, st.timeouts)
    assert.are.equal(2, st.total)
    assert.are.equal(2, helpers.count_backends('pgpool'))
    a:release()
    b:release()
  end)

  it('returns a timeout at once for acquire{timeout = 0} when full', function()
    local pool = pgpool.configure(opts('cap-zero', { max = 1 }))
    local a = assert(pool:acquire())
    local t0 = helpers.now()
    local conn, _, code = pool:acquire{ timeout = 0 }
    assert.is_nil(conn)
    assert.are.equal('timeout', code)
    assert.is_true(helpers.now() - t0 < 0.2)
    a:release()
  end)

  it('never exceeds max under 8 concurrent acquirers', function()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    local pool = pgpool.configure(opts('cap-threads', { max = 3 }))
    local function worker(path, cpath, name, iterations, outfile)
      package.path, package.cpath = path, cpath
      local pg = require 'pgpool'
      local p = assert(pg.pool(name))
      local failures = 0
      for _ = 1, iterations do
        local conn = p:acquire{ timeout = 5 }
        if conn then
          if not conn:query('select pg_sleep(0.002)') then failures = failures + 1 end
          conn:release()
        else
          failures = failures + 1
        end
      end
      local f = io.open(outfile, 'w')
      f:write(tostring(failures))
      f:close()
    end
    local threads, files = {}, {}
    for i = 1, 8 do
      files[i] = helpers.tmpname()
      threads[i] = helpers.start_thread(worker, 'cap-threads', 25, files[i])
    end
    local max_seen, inconsistent = 0, nil
    helpers.wait_until(function()
      local st = pool:stats()
      if st.total > max_seen then max_seen = st.total end
      if st.total ~= st.idle + st.in_use + st.connecting then inconsistent = st end
      local n = helpers.count_backends('pgpool')
      if n > max_seen then max_seen = n end
      for i = 1, 8 do
        if helpers.read_file(files[i]) == '' then return false end
      end
      return true
    end, 20, 0.01)
    for i = 1, 8 do threads[i]:join() end
    for i = 1, 8 do
      assert.are.equal('0', helpers.read_file(files[i]), 'thread ' .. i .. ' failed')
      os.remove(files[i])
    end
    assert.is_nil(inconsistent, 'total ~= idle + in_use + connecting')
    assert.is_true(max_seen <= 3, 'saw ' .. max_seen .. ' connections')
    local st = pool:stats()
    assert.is_true(st.created <= 3)
    assert.are.equal(200, st.acquired)
    assert.are.equal(0, st.in_use)
  end)

  it('serves waiters in FIFO order', function()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    helpers.psql('drop table if exists fifo_order; create table fifo_order(id serial primary key, name text)')
    local pool = pgpool.configure(opts('fifo', { max = 1 }))
    local held = assert(pool:acquire())
    local function waiter(path, cpath, name, who)
      package.path, package.cpath = path, cpath
      local pg = require 'pgpool'
      local p = assert(pg.pool(name))
      local conn = assert(p:acquire{ timeout = 5 })
      conn:query('insert into fifo_order(name) values ($1)', who)
      conn:release()
    end
    local threads = {}
    for i, who in ipairs{ 'A', 'B', 'C' } do
      threads[i] = helpers.start_thread(waiter, 'fifo', who)
      assert.is_true(helpers.wait_until(function() return pool:stats().waiting == i end, 3),
        who .. ' never queued')
    end
    held:release()
    for _, t in ipairs(threads) do t:join() end
    assert.are.equal('A,B,C', helpers.psql('select string_agg(name, \',\' order by id) from fifo_order'))
    assert.are.equal(1, pool:stats().created)
    helpers.psql('drop table fifo_order')
  end)

  it('rejects an acquire with "full" when max_waiting waiters are queued', function()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    local pool = pgpool.configure(opts('full', { max = 1, max_waiting = 1 }))
    local held = assert(pool:acquire())
    local function waiter(path, cpath, name)
      package.path, package.cpath = path, cpath
      local p = assert(require('pgpool').pool(name))
      local conn = p:acquire{ timeout = 5 }
      if conn then conn:release() end
    end
    local t = helpers.start_thread(waiter, 'full')
    assert.is_true(helpers.wait_until(function() return pool:stats().waiting == 1 end, 3))
    local t0 = helpers.now()
    local conn, _, code = pool:acquire{ timeout = 2 }
    assert.is_nil(conn)
    assert.are.equal('full', code)
    assert.is_true(helpers.now() - t0 < 0.5)
    held:release()
    t:join()
  end)
end)

describe('release', function()
  before_each(function()
    helpers.psql('drop table if exists rb_t; create table rb_t(a int)')
  end)
  after_each(function()
    helpers.psql('drop table if exists rb_t')
  end)

  it('rolls back a connection released inside a transaction', function()
    local pool = pgpool.configure(opts('rollback', { max = 1 }))
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    assert.is_true(conn:exec('begin'))
    assert.truthy(conn:query('insert into rb_t values (1)'))
    assert.is_true(conn:release())
    assert.are.equal(1, pool:stats().rollbacks)
    local again = assert(pool:acquire())
    assert.are.equal(pid, again:backend_pid())   -- rolled back, not replaced
    assert.is_true(outside_transaction(again))
    assert.are.equal(0, again:query('select count(*) as n from rb_t')[1].n)
    again:release()
    assert.are.equal('0', helpers.psql('select count(*) from rb_t'))
    assert.are.equal(1, pool:stats().created)
  end)

  it('rolls back a connection released inside a failed transaction', function()
    local pool = pgpool.configure(opts('rollback-failed', { max = 1 }))
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    assert.is_true(conn:exec('begin'))
    assert.truthy(conn:query('insert into rb_t values (1)'))
    local res, _, code = conn:query('select 1/0')
    assert.is_nil(res)
    assert.are.equal('22012', code)
    conn:release()
    assert.are.equal(1, pool:stats().rollbacks)
    local again = assert(pool:acquire())
    assert.are.equal(pid, again:backend_pid())
    assert.are.equal(1, again:query('select 1 as x')[1].x)
    assert.is_true(outside_transaction(again))
    again:release()
    assert.are.equal('0', helpers.psql('select count(*) from rb_t'))
  end)

  it('returns a garbage-collected connection to the pool and counts it as leaked', function()
    local pool = pgpool.configure(opts('gc', { max = 2 }))
    local function leak()
      local conn = assert(pool:acquire())
      assert.truthy(conn:query('select 1'))
    end
    leak()
    collectgarbage()
    collectgarbage()
    local st = pool:stats()
    assert.are.equal(0, st.in_use)
    assert.are.equal(1, st.idle)
    assert.are.equal(1, st.leaked)
    assert.are.equal(1, #helpers.log_lines(log, 'garbage-collected'))
    assert.are.equal('warn', helpers.log_lines(log, 'garbage-collected')[1].level)
    local conn = assert(pool:acquire())       -- the same connection, reused
    assert.are.equal(1, pool:stats().created)
    conn:release()
  end)

  it('rolls back a connection garbage-collected inside a transaction before reuse', function()
    local pool = pgpool.configure(opts('gc-txn', { max = 1 }))
    local function leak()
      local conn = assert(pool:acquire())
      assert.is_true(conn:exec('begin'))
      assert.truthy(conn:query('insert into rb_t values (1)'))
    end
    leak()
    collectgarbage()
    collectgarbage()
    -- the housekeeper rolls it back in the background, then returns it
    assert.is_true(helpers.wait_until(function() return pool:stats().in_use == 0 end, 2))
    local conn = assert(pool:acquire{ timeout = 1 })
    assert.is_true(outside_transaction(conn))
    assert.are.equal(0, conn:query('select count(*) as n from rb_t')[1].n)
    conn:release()
  end)

  it('releases the row locks of a connection garbage-collected inside a transaction without waiting for the next acquire', function()
    helpers.psql('insert into rb_t values (7)')
    local pool = pgpool.configure(opts('gc-locks', { max = 1 }))
    local function leak()
      local conn = assert(pool:acquire())
      assert.is_true(conn:exec('begin'))
      assert.truthy(conn:query('select a from rb_t where a = 7 for update'))
    end
    leak()
    collectgarbage()
    collectgarbage()
    -- nobody acquires from the pool: the lock must still go within a second
    local freed = helpers.wait_until(function()
      return pcall(helpers.psql, "set lock_timeout = '50ms'; select a from rb_t where a = 7 for update")
    end, 2, 0.1)
    assert.is_true(freed)
    local st = pool:stats()
    assert.are.equal(1, st.leaked)
    assert.are.equal(1, st.rollbacks)
    assert.are.equal(1, st.idle)
  end)

  -- <close> is Lua 5.4 syntax: elsewhere these two are declared pending.
  local it_54 = IS_54 and it or function(name) pending(name .. ': <close> needs Lua 5.4') end

  it_54('releases a <close> variable at scope exit (Lua 5.4)', function()
    local pool = pgpool.configure(opts('close', { max = 1 }))
    local chunk = assert(load([[
      local pool = ...
      do
        local conn <close> = assert(pool:acquire())
        assert(conn:query('select 1'))
        assert(pool:stats().in_use == 1)
      end
      return pool:stats()
    ]]))
    local st = chunk(pool)
    assert.are.equal(0, st.in_use)
    assert.are.equal(1, st.released)
    assert.are.equal(0, st.leaked)
  end)

  it_54('releases a <close> variable when the scope exits by an error (Lua 5.4)', function()
    local pool = pgpool.configure(opts('close-error', { max = 1 }))
    local chunk = assert(load([[
      local pool = ...
      local conn <close> = assert(pool:acquire())
      error('boom')
    ]]))
    assert.is_false((pcall(chunk, pool)))
    assert.are.equal(0, pool:stats().in_use)
  end)

  it('is idempotent: a second release returns true and changes nothing', function()
    local pool = pgpool.configure(opts('double', { max = 2 }))
    local conn = assert(pool:acquire())
    assert.is_true(conn:release())
    assert.is_true(conn:release())
    local st = pool:stats()
    assert.are.equal(1, st.released)
    assert.are.equal(1, st.idle)
    assert.are.equal(0, st.in_use)
  end)

  it('never lets a stale handle release the next holder of the connection', function()
    local pool = pgpool.configure(opts('stale', { max = 1 }))
    local first = assert(pool:acquire())
    first:release()
    local second = assert(pool:acquire())
    assert.is_true(first:release())
    assert.are.equal(1, pool:stats().in_use)
    assert.are.equal(1, second:query('select 1 as x')[1].x)
    second:release()
  end)

  it('raises "pgpool: connection released" for any use after release', function()
    local pool = pgpool.configure(opts('after-release', { max = 1 }))
    local conn = assert(pool:acquire())
    conn:release()
    for _, call in ipairs{
      function() return conn:query('select 1') end,
      function() return conn:exec('select 1') end,
      function() return conn:backend_pid() end,
    } do
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.matches('pgpool: connection released', err, 1, true)
    end
    assert.matches('released', tostring(conn))
  end)

  it('closes a discarded connection instead of returning it', function()
    local pool = pgpool.configure(opts('discard', { max = 1 }))
    local conn = assert(pool:acquire())
    assert.is_true(conn:discard())
    local st = pool:stats()
    assert.are.equal(0, st.total)
    assert.are.equal(1, st.closed_discarded)
    assert.is_true(backends_become(0))
  end)
end)

describe('housekeeping', function()
  it('closes idle connections after idle_timeout with no pool calls in between', function()
    local pool = pgpool.configure(opts('idle', { idle_timeout = 0.3, max = 5 }))
    local conns = {}
    for i = 1, 3 do conns[i] = assert(pool:acquire()) end
    for i = 1, 3 do conns[i]:release() end
    assert.are.equal(3, helpers.count_backends('pgpool'))
    helpers.sleep(1.0)
    -- (a short grace only for the server backends to exit after Terminate)
    assert.is_true(backends_become(0, 0.3), 'idle connections still open after 1 s')
    local st = pool:stats()
    assert.are.equal(3, st.closed_idle)
    assert.are.equal(0, st.total)
  end)

  it('keeps min connections open past idle_timeout', function()
    local pool = pgpool.configure(opts('idle-min', { idle_timeout = 0.3, min = 1, max = 5 }))
    local conns = {}
    for i = 1, 3 do conns[i] = assert(pool:acquire()) end
    for i = 1, 3 do conns[i]:release() end
    helpers.sleep(1.0)
    assert.is_true(backends_become(1, 0.3))
    local st = pool:stats()
    assert.are.equal(2, st.closed_idle)
    assert.are.equal(1, st.total)
    assert.are.equal(1, st.idle)
  end)

  -- A connection that becomes idle wakes the housekeeper when its
  -- idle_timeout ends before the housekeeper's next 1 s tick.
  it('closes an idle connection above min within idle_timeout + 0.3 s of its release', function()
    local pool = pgpool.configure(opts('idle-prompt', { idle_timeout = 0.3, min = 1, max = 3 }))
    assert.is_true(helpers.wait_until(function() return pool:stats().idle == 1 end, 2, 0.01))
    local a, b = assert(pool:acquire()), assert(pool:acquire())
    a:release()
    b:release()
    helpers.sleep(0.6)
    local st = pool:stats()
    assert.are.equal(1, st.closed_idle, 'spare idle connection not closed 0.6 s after its release')
    assert.are.equal(1, st.total)
  end)

  it('opens min connections in the background without any acquire', function()
    local pool = pgpool.configure(opts('min', { min = 2, max = 4 }))
    assert.is_true(backends_become(2, 2), 'min connections were not opened')
    -- the server sees a backend a moment before the pool counts it
    assert.is_true(helpers.wait_until(function() return pool:stats().created == 2 end, 2))
    local st = pool:stats()
    assert.are.equal(2, st.created)
    assert.are.equal(2, st.idle)
    assert.are.equal(0, st.acquired)
  end)

  it('replaces a min connection that was closed', function()
    local pool = pgpool.configure(opts('min-refill', { min = 1, max = 2 }))
    assert.is_true(backends_become(1, 2))
    local conn = assert(pool:acquire())
    conn:discard()
    assert.is_true(helpers.wait_until(function() return pool:stats().idle == 1 end, 3))
    assert.are.equal(2, pool:stats().created)
  end)

  -- The liveness check reads through the FATAL that pg_terminate_backend
  -- sends to the EOF behind it.
  it('never hands out a connection whose backend was terminated while idle', function()
    if helpers.via_pgbouncer() then
      return pending('through PgBouncer: an idle client has no backend of its own to terminate')
    end
    local pool = pgpool.configure(opts('killed', { max = 2 }))
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    conn:release()
    assert.are.equal('t', helpers.psql('select pg_terminate_backend(' .. pid .. ')'))
    assert.is_true(helpers.wait_until(function()
      return helpers.psql('select count(*) from pg_stat_activity where pid = ' .. pid) == '0'
    end, 3))
    local again = assert(pool:acquire())
    local res, msg = again:query('select 1 as x')
    local new_pid = again:backend_pid()
    again:release()
    assert.truthy(res, 'query on the reused connection failed: ' .. tostring(msg))
    assert.are_not.equal(pid, new_pid)
    assert.are.equal(1, pool:stats().closed_broken)
  end)
end)

describe('acquire', function()
  it('raises for misuse: an unknown option or a negative timeout', function()
    local pool = pgpool.configure(opts('acquire-misuse'))
    local ok, err = pcall(pool.acquire, pool, { tiemout = 1 })
    assert.is_false(ok)
    assert.truthy(err:find("'tiemout'", 1, true), err)
    ok, err = pcall(pool.acquire, pool, { timeout = -1 })
    assert.is_false(ok)
    assert.truthy(err:find('timeout', 1, true), err)
    assert.are.equal(0, pool:stats().in_use)
  end)

  it('closes a connection released after its max_lifetime instead of returning it', function()
    local pool = pgpool.configure(opts('lifetime-release', { max_lifetime = 0.2 }))
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    helpers.sleep(0.3)
    conn:release()
    local st = pool:stats()
    assert.are.equal(0, st.total)
    assert.are.equal(1, st.closed_lifetime)
    conn = assert(pool:acquire())
    assert.are_not.equal(pid, conn:backend_pid())
    conn:release()
  end)

  -- Acquire itself looks at the lifetime, not only the housekeeper. The
  -- 'hk-sync' pool (min = 1) makes the housekeeper run a pass just before,
  -- so its next tick is ~1 s away.
  it('never hands out an idle connection past its max_lifetime', function()
    local sync = pgpool.configure(opts('hk-sync', { min = 1, max = 1 }))
    assert.is_true(helpers.wait_until(function() return sync:stats().idle == 1 end, 2, 0.01))
    local pool = pgpool.configure(opts('lifetime', { max_lifetime = 0.2 }))
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    conn:release()                -- before its lifetime ends: back to idle
    helpers.sleep(0.3)
    conn = assert(pool:acquire())
    local pid2 = conn:backend_pid()
    conn:release()
    assert.are_not.equal(pid, pid2, 'an expired connection was handed out')
    assert.are.equal(1, pool:stats().closed_lifetime)
  end)

  -- On LuaJIT/5.1 builds the origin comes from compat_traceback().
  it('warns once, with where it was acquired, about a connection held past leak_timeout', function()
    local pool = pgpool.configure(opts('leak', { leak_timeout = 0.2 }))
    local conn = assert(pool:acquire())
    assert.is_true(helpers.wait_until(function()
      pool:stats()   -- delivers log lines
      return #helpers.log_lines(log, 'pool "leak": connection held for') > 0
    end, 2.5))
    helpers.sleep(0.3)
    pool:stats()
    local lines = helpers.log_lines(log, 'pool "leak": connection held for')
    assert.are.equal(1, #lines)
    assert.are.equal('warn', lines[1].level)
    assert.truthy(lines[1].message:find('pool_spec.lua', 1, true), lines[1].message)
    conn:release()
  end)
end)

describe('stats()', function()
  local FIELDS = {
    name = 'string', pid = 'number', max = 'number', min = 'number', total = 'number',
    idle = 'number', in_use = 'number', connecting = 'number', waiting = 'number',
    acquired = 'number', released = 'number', created = 'number', closed = 'number',
    timeouts = 'number', connect_errors = 'number', leaked = 'number', queries = 'number',
    query_errors = 'number', slow_queries = 'number', wait_time_total = 'number',
    wait_time_max = 'number',
  }

  it('has every contract field with its type', function()
    local pool = pgpool.configure(opts('stats'))
    local st = pool:stats()
    for field, kind in pairs(FIELDS) do
      assert.are.equal(kind, type(st[field]), 'stats().' .. field)
    end
    assert.are.equal('stats', st.name)
    assert.are.equal(20, st.max)
  end)

  it('keeps total == idle + in_use + connecting and counts what happened', function()
    local pool = pgpool.configure(opts('stats-count', { max = 3 }))
    local a, b = assert(pool:acquire()), assert(pool:acquire())
    a:release()
    local st = pool:stats()
    assert.are.equal(st.total, st.idle + st.in_use + st.connecting)
    assert.are.same({ 2, 1, 1 }, { st.total, st.idle, st.in_use })
    assert.truthy(b:query('select 1'))
    assert.is_nil(b:query('select * from no_such_table'))
    b:release()
    st = pool:stats()
    assert.are.equal(st.total, st.idle + st.in_use + st.connecting)
    assert.are.same({ 2, 2, 2, 2, 1 }, { st.acquired, st.released, st.created, st.queries, st.query_errors })
    assert.is_true(st.wait_time_total >= 0 and st.wait_time_max >= 0)
    local self_pid = tonumber(helpers.read_file('/proc/self/stat'):match('^(%d+)'))
    assert.are.equal(self_pid, st.pid)
  end)
end)
