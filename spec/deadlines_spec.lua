-- Every wait has a deadline, and an infinite one waits without spinning:
-- acquire and shutdown with math.huge, NaN and negative timeouts refused,
-- a caller that gives up early leaving its connection attempt to the pool,
-- and connect_timeout = 0 meaning "no limit".
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

-- A thread that holds the only connection of pool `name` for `hold`
-- seconds, then releases it.
local function holder(path, cpath, name, hold)
  package.path, package.cpath = path, cpath
  local p = assert(require('pgpool').pool(name))
  local conn = assert(p:acquire())
  require('luv').sleep(math.floor(hold * 1000))
  conn:release()
end

-- Run fn while another thread holds pool `name`'s only connection for 1 s;
-- returns fn's results after the wall and CPU time fn took.
local function while_held(pool, name, fn)
  local t = helpers.start_thread(holder, name, 1.0)
  assert(helpers.wait_until(function() return pool:stats().in_use == 1 end, 3))
  local wall0, cpu0 = helpers.now(), os.clock()
  local results = { fn() }
  local wall, cpu = helpers.now() - wall0, os.clock() - cpu0
  t:join()
  return wall, cpu, results
end

describe('deadlines', function()
  if not helpers.has_threads() then
    pending('luv threads unavailable')
    return
  end
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  for _, timeout in ipairs{ math.huge, 1e19 } do
    it(('waits without spinning for acquire{ timeout = %g } and gets the released connection'):format(timeout), function()
      local pool = pgpool.configure(opts('huge-acquire', { max = 1 }))
      local wall, cpu, got = while_held(pool, 'huge-acquire', function()
        return pool:acquire{ timeout = timeout }
      end)
      assert.truthy(got[1], got[2])
      got[1]:release()
      assert.is_true(wall > 0.5, 'returned after ' .. wall .. ' s')
      assert.is_true(cpu < 0.5, ('a 1 s wait cost %.2f s of CPU'):format(cpu))
    end)
  end

  it('waits without spinning for shutdown{ timeout = math.huge } while a connection is held', function()
    local pool = pgpool.configure(opts('huge-shutdown', { max = 1 }))
    local wall, cpu, got = while_held(pool, 'huge-shutdown', function()
      return pool:shutdown{ timeout = math.huge }
    end)
    assert.is_true(got[1], got[2])
    assert.is_true(wall > 0.5, 'returned after ' .. wall .. ' s')
    assert.is_true(cpu < 0.5, ('a 1 s wait cost %.2f s of CPU'):format(cpu))
  end)

  it('waits without spinning for shutdown_all(math.huge) while a connection is held', function()
    local pool = pgpool.configure(opts('huge-all', { max = 1 }))
    local wall, cpu, got = while_held(pool, 'huge-all', function()
      return pgpool.shutdown_all(math.huge)
    end)
    assert.is_true(got[1], got[2])
    assert.is_true(wall > 0.5 and cpu < 0.5, ('wall %.2f s, CPU %.2f s'):format(wall, cpu))
  end)

  it('refuses NaN and negative timeouts, naming the argument', function()
    local pool = pgpool.configure(opts('nan', { max = 1 }))
    for _, bad in ipairs{ 0 / 0, -1 } do
      local ok, err = pcall(pool.acquire, pool, { timeout = bad })
      assert.is_false(ok)
      assert.truthy(helpers.contains(err, 'timeout'), err)
      ok, err = pcall(pool.shutdown, pool, { timeout = bad })
      assert.is_false(ok)
      assert.truthy(helpers.contains(err, 'timeout'), err)
      ok, err = pcall(pgpool.shutdown_all, bad)
      assert.is_false(ok)
      assert.truthy(helpers.contains(err, 'timeout'), err)
      ok, err = pcall(pgpool.shutdown_all, { timeout = bad })
      assert.is_false(ok)
      assert.truthy(helpers.contains(err, 'timeout'), err)
    end
    assert.is_false(pool:is_shut_down())
  end)

  it('gives a caller with a zero or tiny timeout "timeout" and lands its connection attempt in the pool', function()
    local pool = pgpool.configure(opts('tiny', { max = 2 }))
    for _, timeout in ipairs{ 0, 0.008 } do
      local conn, msg, code = pool:acquire{ timeout = timeout }
      if conn then conn:release() else assert.are.equal('timeout', code, msg) end
    end
    assert.is_true(helpers.wait_until(function() return pool:stats().idle >= 1 end, 5))
    local st = pool:stats()
    assert.are.equal(0, st.connect_errors)
    -- timeout 0 is a try: health does not count it (a 0.008 s wait that
    -- timed out, it does)
    assert.are.equal(st.timeouts - 1, st.window.timeouts)
    if st.window.timeouts == 0 then assert.are.equal('ok', pool:health().status) end
    local conn = assert(pool:acquire{ timeout = 0 })   -- served from idle
    conn:release()
  end)

  it('takes connect_timeout = 0 as no limit, as libpq does', function()
    local pool = pgpool.configure(opts('connect-0', { connect_timeout = 0 }))
    local conn = assert(pool:acquire{ timeout = 5 })
    assert.truthy(conn:query('select 1 as one'))
    conn:release()
  end)
end)

describe('sizes', function()
  it('refuses a max, max_shared or count beyond the documented bounds, at once', function()
    for _, o in ipairs{ { max = 1e7 }, { max = 10001 }, { max_shared = 1e5 },
                        { max_waiting = 2 ^ 31 }, { statement_cache = 1e12 } } do
      local t0 = helpers.now()
      local ok, err = pcall(pgpool.configure, opts('absurd', o))
      assert.is_false(ok)
      local key = next(o)
      assert.truthy(helpers.contains(err, "'" .. key .. "'"), err)
      assert.is_true(helpers.now() - t0 < 0.1)
    end
    local pool = pgpool.configure(opts('max-bound', { max = 10000 }))
    assert.are.equal(10000, pool:stats().max)
    pool:shutdown()
  end)
end)
