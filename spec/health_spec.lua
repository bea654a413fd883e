-- health() judges a short window (the `health` option, README "Observing"),
-- not one instant: a pool in full use with nobody waiting is fine, callers
-- waiting most of the window is a warning that ends with the window,
-- timeouts and failed connects are critical, and a primary's health shows
-- its replicas'.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

local function reasons(h) return table.concat(h.reasons, '; ') end

-- A thread of its own that acquires from pool `name`, holds the connection
-- `hold` s, releases it, `times` times over.
local function cycler(path, cpath, name, times, hold)
  package.path, package.cpath = path, cpath
  local uv = require 'luv'
  local p = assert(require('pgpool').pool(name))
  for _ = 1, times do
    local conn = assert(p:acquire{ timeout = 10 })
    uv.sleep(math.floor(hold * 1000))
    conn:release()
  end
end

describe('health', function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('is ok for a pool whose every connection is in use while nobody waits', function()
    local pool = pgpool.configure(opts('health-full', { max = 2 }))
    local a, b = assert(pool:acquire()), assert(pool:acquire())
    local h = pool:health()
    assert.are.equal('ok', h.status, reasons(h))
    assert.are.equal(1, h.utilization)
    a:release()
    b:release()
    assert.are.equal('ok', pool:health().status)
  end)

  it('turns warning once callers waited for most of the window, and ok again after it', function()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    local pool = pgpool.configure(opts('health-wait', { max = 1, health = { window = 3 } }))
    local held = assert(pool:acquire())
    local t = helpers.start_thread(cycler, 'health-wait', 1, 0)
    assert.is_true(helpers.wait_until(function() return pool:stats().waiting == 1 end, 3))
    -- one instant of waiting is no warning yet
    assert.are.equal('ok', pool:health().status, reasons(pool:health()))
    assert.is_true(helpers.wait_until(function() return pool:health().status == 'warning' end, 4),
      reasons(pool:health()))
    assert.truthy(helpers.contains(reasons(pool:health()), 'waited for a connection'), reasons(pool:health()))
    held:release()
    t:join()
    assert.are.equal(0, pool:stats().waiting)
    assert.is_true(helpers.wait_until(function() return pool:health().status == 'ok' end, 5),
      reasons(pool:health()))
  end)

  it('turns warning when the window\'s acquire-wait p95 is above wait_p95', function()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    local pool = pgpool.configure(opts('health-p95', { max = 1,
      health = { window = 5, waiting_ratio = 0, wait_p95 = 0.005 } }))
    local a = helpers.start_thread(cycler, 'health-p95', 15, 0.02)
    local b = helpers.start_thread(cycler, 'health-p95', 15, 0.02)
    a:join()
    b:join()
    local h = pool:health()
    assert.are.equal('warning', h.status, reasons(h))
    assert.truthy(helpers.contains(reasons(h), 'acquire wait p95'), reasons(h))
  end)

  it('turns critical when an acquire timed out in the window, and ok after it', function()
    local pool = pgpool.configure(opts('health-timeout', { max = 1, health = { window = 2 } }))
    local held = assert(pool:acquire())
    local conn, _, code = pool:acquire{ timeout = 0.05 }
    assert.is_nil(conn)
    assert.are.equal('timeout', code)
    held:release()
    local h = pool:health()
    assert.are.equal('critical', h.status, reasons(h))
    assert.truthy(helpers.contains(reasons(h), '1 acquire(s) timed out'), reasons(h))
    assert.is_true(helpers.wait_until(function() return pool:health().status == 'ok' end, 4),
      reasons(pool:health()))
  end)

  it('shows a replica that cannot connect in its primary\'s health', function()
    local pool = pgpool.configure(opts('health-rw', { connect_timeout = 1, log_level = 'off',
      replicas = { 'host=127.0.0.1 port=1 dbname=nope' } }))
    assert(pool:acquire{ read_only = true }):release()   -- served by the primary
    local replica = pgpool.pool('health-rw/replica-1'):health()
    assert.are.equal('critical', replica.status, reasons(replica))
    local h = pool:health()
    assert.are.equal('warning', h.status, reasons(h))
    assert.truthy(helpers.contains(reasons(h), "replica 'health-rw/replica-1': critical: "), reasons(h))
    assert.are.equal('critical', h.replicas[1].status)
  end)

  it('rejects impossible health options, naming the key', function()
    local cases = {
      { 'x', "option 'health' must be a table" },
      { { window = 0 / 0 }, "option 'health.window' must be a number" },
      { { window = -1 }, "option 'health.window' must be a whole number from 1 to 300" },
      { { window = math.huge }, "option 'health.window' must be a whole number from 1 to 300" },
      { { window = 301 }, "option 'health.window' must be a whole number from 1 to 300" },
      { { window = 2.5 }, "option 'health.window' must be a whole number from 1 to 300" },
      { { waiting_ratio = 1.5 }, "option 'health.waiting_ratio' must be from 0 to 1" },
      { { waiting_ratio = -0.1 }, "option 'health.waiting_ratio' must be from 0 to 1" },
      { { wait_p95 = -1 }, "option 'health.wait_p95' must be a finite number >= 0" },
      { { wait_p95 = math.huge }, "option 'health.wait_p95' must be a finite number >= 0" },
      { { wait_p95 = 0 / 0 }, "option 'health.wait_p95' must be a number" },
      { { timeouts = 1.5 }, "option 'health.timeouts' must be a whole number" },
      { { connect_failures = -2 }, "option 'health.connect_failures' must be a finite number >= 0" },
      { { windw = 3 }, "unknown option 'health.windw'" },
      { { [1] = 3 }, "unknown option 'health.1'" },
      { { window = '3' }, "option 'health.window' must be a number, got string" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(pgpool.configure, opts('health-bad', { health = case[1] }))
      assert.is_false(ok)
      assert.truthy(helpers.contains(err, case[2]), err)
    end
    assert.is_nil(pgpool.pool('health-bad'))
  end)

  it('treats the health options as options: the same are the same pool, others raise', function()
    local a = pgpool.configure(opts('health-same', { health = { window = 5 } }))
    local b = pgpool.configure(opts('health-same', { health = { window = 5 } }))
    assert.are.equal(a:name(), b:name())
    assert.has_error(function() pgpool.configure(opts('health-same', { health = { window = 6 } })) end)
    assert.are.same({ window = 5, waiting_ratio = 0.5, wait_p95 = 0.5, timeouts = 1, connect_failures = 3 },
      a:stats().health_options)
  end)
end)
