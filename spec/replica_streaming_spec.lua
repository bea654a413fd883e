-- replicas = { standby }: a real streaming standby of the test server
-- (pg_basebackup -R, spec/support/standby.sh). acquire{ read_only = true }
-- lands on it and the rest on the primary; a standby that is down costs
-- the callers nothing (the primary serves them) and is retried with
-- backoff, not hammered; a frozen one (SIGSTOP: it takes connections and
-- never answers) costs a read_only acquire no more than its timeout, and
-- the primary serves it; either is used again once it is back.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local WHERE = 'select pg_is_in_recovery() as standby'

describe('a pool with a streaming standby as its replica', function()
  local standby

  setup(function()
    standby = helpers.standby()
    assert.is_true(helpers.wait_until(function()
      return helpers.run(('%s/psql %s -XAtc "select pg_is_in_recovery()" | grep -qx t')
        :format(os.getenv('PGPOOL_TEST_PGBIN'), helpers.shquote(standby.conninfo))) == 0
    end, 10), 'the standby does not answer in recovery')
  end)

  teardown(function()
    pgpool.shutdown_all{ timeout = 1 }
    if standby then standby:remove() end
  end)

  -- Whatever a spec did to it, the standby runs and answers afterwards.
  after_each(function()
    standby:thaw()
    pgpool.shutdown_all{ timeout = 1 }
    if not standby:postmaster_pid() then standby:start() end
  end)

  local function configure(name, extra)
    local o = { name = name, conninfo = helpers.dsn(), log_level = 'off', replicas = { standby.conninfo } }
    for k, v in pairs(extra or {}) do o[k] = v end
    return pgpool.configure(o)
  end

  -- acquire{ read_only = true }, timed; then where the connection is:
  -- true on the standby, false on the primary, nil with the error.
  local function read_only_lands(pool, timeout)
    local t0 = helpers.now()
    local conn, msg, code = pool:acquire{ read_only = true, timeout = timeout }
    local took = helpers.now() - t0
    if not conn then return nil, took, tostring(code) .. ': ' .. tostring(msg) end
    local res, qmsg = conn:query(WHERE)
    conn:release()
    if not res then return nil, took, qmsg end
    return res[1].standby, took
  end

  it('serves acquire{ read_only = true } from the standby, and writes and plain acquires from the primary', function()
    local pool = configure('streaming')
    helpers.psql('drop table if exists streamed; create table streamed(n int)')
    for _ = 1, 3 do
      local on_standby, _, err = read_only_lands(pool, 5)
      assert.is_true(on_standby, err)
    end
    local conn = assert(pool:acquire())
    assert.is_false(assert(conn:query(WHERE))[1].standby)
    assert(conn:query('insert into streamed values ($1)', 42))
    conn:release()
    assert(pool:query('insert into streamed values (43)'))
    -- the standby streams the writes, and refuses its own
    local ro = assert(pool:acquire{ read_only = true })
    assert.is_true(helpers.wait_until(function()
      local res = ro:query('select count(*)::int as n from streamed')   -- nil until the table arrives
      return res and res[1].n == 2
    end, 10), 'the rows never reached the standby')
    local res, _, code = ro:query('insert into streamed values (1)')
    ro:release()
    assert.is_nil(res)
    assert.are.equal('25006', code)
    assert.are.equal(4, pgpool.pool('streaming/replica-1'):stats().acquired)
    helpers.psql('drop table streamed')
  end)

  it('serves read_only acquires from the primary with no error while the standby is down, retries it with backoff, and uses it again once it is back', function()
    local pool = configure('streaming-down', { connect_timeout = 2 })
    assert.is_true((read_only_lands(pool, 5)))
    standby:stop()

    local calls, on_primary, slowest, errors = 0, 0, 0, {}
    local t0 = helpers.now()
    while helpers.now() - t0 < 3 do
      local on_standby, took, err = read_only_lands(pool, 5)
      calls = calls + 1
      if on_standby == false then on_primary = on_primary + 1 end
      if on_standby == nil then errors[#errors + 1] = err end
      if took > slowest then slowest = took end
      helpers.sleep(0.01)
    end
    local st = pgpool.pool('streaming-down/replica-1'):stats()
    assert.are.same({}, errors)
    assert.are.equal(calls, on_primary)
    assert.is_true(calls >= 50, calls .. ' calls')
    assert.is_true(slowest < 1, ('the slowest read_only acquire took %.2f s'):format(slowest))
    -- backoff from 0.1 s doubling (each step jittered to half-to-all):
    -- about six attempts in 3 s, not one a call
    assert.is_true(st.connect_errors >= 2 and st.connect_errors <= 12,
      ('%d connect attempts to the stopped standby for %d calls in 3 s'):format(st.connect_errors, calls))

    standby:start()
    -- the backoff is at most 5 s a step
    assert.is_true(helpers.wait_until(function() return read_only_lands(pool, 5) == true end, 8, 0.1),
      'the standby was not used again within 8 s of its restart')
  end)

  it('bounds a read_only acquire by its timeout while the standby is frozen, serving it from the primary, and uses the standby again once thawed', function()
    -- a frozen server takes the connection and never answers: the attempt
    -- lasts connect_timeout, longer than the callers' timeout
    local pool = configure('streaming-frozen', { connect_timeout = 5, query_timeout = 2 })
    standby:freeze()
    local TIMEOUT, calls, results = 2, 0, {}
    local t0 = helpers.now()
    while helpers.now() - t0 < 6 do
      local on_standby, took, err = read_only_lands(pool, TIMEOUT)
      calls = calls + 1
      results[#results + 1] = ('%s after %.2f s%s'):format(tostring(on_standby), took, err and (': ' .. err) or '')
      assert.is_true(took < TIMEOUT + 0.5, 'a read_only acquire took too long: ' .. table.concat(results, '; '))
      assert.are.equal(false, on_standby, 'not served by the primary: ' .. table.concat(results, '; '))
    end
    standby:thaw()
    assert.is_true(helpers.wait_until(function() return read_only_lands(pool, 5) == true end, 10, 0.1),
      'the standby was not used again within 10 s of its thaw')
  end)
end)
