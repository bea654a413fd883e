-- Never the storm: while the server refuses or is down, a pool keeps at
-- most one connection attempt in flight, backs off exponentially, and
-- gives waiting callers the failed attempt's error at once.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local REFUSED = 'host=127.0.0.1 port=1 dbname=x connect_timeout=2'

-- A thread that calls acquire on pool `name` for `seconds` and writes
-- "<ok> <connect errors> <timeouts> <slowest call>" to `file`.
local function caller(path, cpath, name, seconds, file)
  package.path, package.cpath = path, cpath
  local uv = require('luv')
  local p = assert(require('pgpool').pool(name))
  local ok, errs, timeouts, slowest = 0, 0, 0, 0
  local stop = uv.hrtime() / 1e9 + seconds
  while uv.hrtime() / 1e9 < stop do
    local t0 = uv.hrtime() / 1e9
    local conn, _, code = p:acquire{ timeout = 0.5 }
    local took = uv.hrtime() / 1e9 - t0
    if took > slowest then slowest = took end
    if conn then ok = ok + 1; uv.sleep(10); conn:release()   -- 10 ms of work
    elseif code == 'connect' then errs = errs + 1
    elseif code == 'timeout' then timeouts = timeouts + 1 end
    uv.sleep(5)
  end
  local f = assert(io.open(file, 'w'))
  f:write(('%d %d %d %.3f'):format(ok, errs, timeouts, slowest))
  f:close()
end

local function run_callers(name, n, seconds)
  local threads, files = {}, {}
  for i = 1, n do
    files[i] = helpers.tmpname()
    threads[i] = helpers.start_thread(caller, name, seconds, files[i])
  end
  local total = { ok = 0, errs = 0, timeouts = 0, slowest = 0 }
  for i = 1, n do
    threads[i]:join()
    local ok, errs, timeouts, slowest = helpers.read_file(files[i]):match('(%d+) (%d+) (%d+) ([%d.]+)')
    os.remove(files[i])
    total.ok = total.ok + tonumber(ok)
    total.errs = total.errs + tonumber(errs)
    total.timeouts = total.timeouts + tonumber(timeouts)
    total.slowest = math.max(total.slowest, tonumber(slowest))
  end
  return total
end

describe('never the storm', function()
  if not helpers.has_threads() then
    pending('luv threads unavailable')
    return
  end
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('keeps one attempt in flight with exponential backoff while connects fail (12 callers, 2 s)', function()
    local pool = pgpool.configure{ name = 'storm-down', conninfo = REFUSED, max = 10, log_level = 'off' }
    local total = run_callers('storm-down', 12, 2)
    local st = pool:stats()
    -- steps of 0.1, 0.2, 0.4, 0.8 s (jittered down to half): at most ~8
    -- attempts in 2 s, where one per call (thousands) was made before
    assert.is_true(st.connect_attempts <= 12, st.connect_attempts .. ' attempts in 2 s')
    assert.is_true(st.connect_attempts >= 3, st.connect_attempts .. ' attempts in 2 s')
    assert.are.equal(st.connect_attempts, st.connect_errors)
    assert.is_true(st.backoff > 0)
    assert.is_true(st.connect_failures >= 3)
    assert.are.equal(0, total.ok)
    assert.is_true(total.errs > total.timeouts, ('%d connect errors, %d timeouts'):format(total.errs, total.timeouts))
  end)

  it('gives a caller the failed attempt\'s error at once instead of its whole acquire_timeout', function()
    local pool = pgpool.configure{ name = 'storm-fast', conninfo = REFUSED, acquire_timeout = 5, log_level = 'off' }
    for _ = 1, 5 do
      local t0 = helpers.now()
      local conn, msg, code = pool:acquire()
      assert.is_nil(conn)
      assert.are.equal('connect', code, msg)
      assert.is_true(helpers.now() - t0 < 1, 'waited ' .. (helpers.now() - t0) .. ' s')
    end
    assert.is_true(pool:stats().connect_attempts <= 3)
  end)

  it('connects again as soon as the next step falls due, and forgets the backoff', function()
    local pool = pgpool.configure{ name = 'storm-recover', conninfo = REFUSED, log_level = 'off' }
    for _ = 1, 3 do pool:acquire{ timeout = 0.3 } end
    assert.is_true(pool:stats().backoff > 0)
    pool:shutdown()
    -- the same pool options against a live server: the first attempt works
    pool = pgpool.configure{ name = 'storm-recover', conninfo = helpers.dsn(), log_level = 'off' }
    local conn = assert(pool:acquire{ timeout = 2 })
    conn:release()
    local st = pool:stats()
    assert.are.equal(0, st.backoff)
    assert.are.equal(0, st.connect_failures)
    assert.are.equal(st.max, st.limit)
  end)

  it('queues callers on the connections it holds when the server is full, instead of passing them 53300', function()
    local pool = pgpool.configure{ name = 'full', conninfo = helpers.dsn(), max = 30, acquire_timeout = 5,
      log_level = 'off' }
    local first = {}
    for i = 1, 3 do first[i] = assert(pool:acquire()) end
    for i = 1, 3 do first[i]:release() end
    -- another client takes every slot the server has left
    local hog = pgpool.configure{ name = 'hog', conninfo = helpers.dsn(), max = 150, log_level = 'off' }
    local held = {}
    while true do
      local h, _, code = hog:acquire{ timeout = 1 }
      if not h then assert.are.equal('timeout', code); break end
      held[#held + 1] = h
    end
    local total = run_callers('full', 12, 3)
    local st = pool:stats()
    assert.are.equal(0, total.errs)
    assert.are.equal(0, total.timeouts)
    assert.is_true(total.ok > 50, total.ok .. ' served')
    assert.are.equal(3, st.limit)
    assert.truthy(helpers.contains(st.limit_reason, '53300'), st.limit_reason)
    assert.is_true(st.connect_attempts <= 12, st.connect_attempts .. ' attempts')
    local health = pool:health()
    assert.are.equal(3, health.limit)
    assert.truthy(helpers.contains(table.concat(health.reasons, '; '), 'limit lowered to 3'))
    -- the server has room again: the limit climbs back while callers wait
    for _, h in ipairs(held) do h:release() end
    hog:shutdown()
    -- (callers for up to 8 s: the backoff of phase one's failed probes,
    -- at most 5 s, comes before the next probe)
    for _ = 1, 8 do
      run_callers('full', 12, 1)
      if pool:stats().limit > 3 then break end
    end
    local after = pool:stats()
    assert.is_true(after.limit > 3, ('limit %d after %d attempts, %d failed, backoff %g s')
      :format(after.limit, after.connect_attempts, after.connect_errors, after.backoff))
  end)
end)
