-- conn:pipeline(fn, {isolate = bool}): every statement sent at once, results
-- read back in order, one round trip for the batch.
--
-- One round trip is proved, not guessed from timing noise: the connection
-- goes through a small proxy (luv, in a child process) that holds every
-- client -> server chunk back DELAY seconds. Each round trip then costs at
-- least DELAY: sequential queries take >= n * DELAY (checked, to show the
-- proxy works), a pipeline of 20 statements must take < 3 * DELAY, where a
-- statement-by-statement implementation would need >= 20 * DELAY.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local contains = helpers.contains

local null = pgpool.null
local bytea = pgpool.bytea
local TABLE = 'pipeline_spec_rows'

local create_table, drop_table, count_rows = helpers.tagged_table(TABLE)
setup(create_table)
teardown(drop_table)

local pool, conn
local open, close = helpers.held_connection('pipeline_spec', { max = 2 },
  function(p, c) pool, conn = p, c end)
before_each(open)
after_each(close)

-- The connection is idle and outside any transaction block.
local function assert_idle_outside_transaction(c)
  local res, msg, code = (c or conn):query('savepoint probe')
  assert.is_nil(res)
  assert.are.equal('25P01', code, msg)
end

describe('conn:pipeline', function()
  it('returns one result per statement, in order', function()
    local results = conn:pipeline(function(p)
      for i = 1, 10 do p:query('select $1::int as v, $2::text as s', i, 'n' .. i) end
    end)
    assert.are.equal(10, #results)
    for i = 1, 10 do
      assert.are.equal(i, results[i][1].v)
      assert.are.equal('n' .. i, results[i][1].s)
      assert.are.same({ 'v', 's' }, results[i].columns)
    end
  end)

  it('returns each statement its full result: rows, columns, command, affected', function()
    local tag = 'shape'
    local results = conn:pipeline(function(p)
      p:query(('insert into %s values ($1, 1), ($1, 2)'):format(TABLE), tag)
      p:query(('update %s set n = n + 10 where tag = $1'):format(TABLE), tag)
      p:query(('select n from %s where tag = $1 order by n'):format(TABLE), tag)
      p:query(('delete from %s where tag = $1'):format(TABLE), tag)
    end)
    assert.are.equal('INSERT', results[1].command)
    assert.are.equal(2, results[1].affected)
    assert.are.equal('UPDATE', results[2].command)
    assert.are.equal(2, results[2].affected)
    assert.are.equal('SELECT', results[3].command)
    assert.are.same({ 11, 12 }, { results[3][1].n, results[3][2].n })
    assert.are.same({ 'n' }, results[3].columns)
    assert.are.equal('DELETE', results[4].command)
    assert.are.equal(2, results[4].affected)
  end)

  it('returns an empty table for an empty pipeline, in both modes', function()
    for _, opts in ipairs{ {}, { isolate = true }, { isolate = false } } do
      local results = conn:pipeline(function() end, opts)
      assert.are.equal('table', type(results))
      assert.is_nil(next(results))
    end
    assert.are.equal(1, assert(conn:query('select 1 as v'))[1].v)
  end)

  it('binds every kind of parameter: NULL (trailing too), booleans, floats, bytea, arrays', function()
    local results = conn:pipeline(function(p)
      p:query('select $1::int as a, $2::text as b, $3::text as c', 1, nil, nil)
      p:query('select $1::bool as a, $2::bool as b', true, false)
      p:query('select $1::float8 as a, $2::float8 as b', 0.1, -math.huge)
      p:query('select $1::bytea as a, octet_length($1) as b', bytea('\0\255\0'))
      p:query('select $1::int[] as a, $2::text[] as b', { { 1, 2 }, { 3, null } }, { 'a"b', 'NULL', null })
      p:query('select $1::bytea[] as a', { bytea('\0'), null })
      p:query('select $1::text as a', null)
    end)
    assert.are.equal(7, #results)
    assert.are.same({ a = 1, b = null, c = null }, results[1][1])
    assert.are.same({ a = true, b = false }, results[2][1])
    assert.are.same({ a = 0.1, b = -math.huge }, results[3][1])
    assert.are.same({ a = '\0\255\0', b = 3 }, results[4][1])
    assert.are.same({ { 1, 2 }, { 3, null } }, results[5][1].a)
    assert.are.same({ 'a"b', 'NULL', null }, results[5][1].b)
    assert.are.same({ '\0', null }, results[6][1].a)
    assert.are.equal(null, results[7][1].a)
  end)

  describe('by default (one implicit transaction)', function()
    it('gives the failing statement error and code (22012), the later ones code "aborted", and rolls back the earlier ones', function()
      local tag = 'default-mode'
      local results = conn:pipeline(function(p)
        p:query(('insert into %s values ($1, 1)'):format(TABLE), tag)
        p:query('select 1/0 as v')
        p:query(('insert into %s values ($1, 2)'):format(TABLE), tag)
        p:query('select 3 as v')
      end)
      assert.are.equal(4, #results)
      assert.are.equal('INSERT', results[1].command)
      assert.are.equal('string', type(results[2].error))
      assert.truthy(contains(results[2].error, 'division by zero'), results[2].error)
      assert.are.equal('22012', results[2].code)
      assert.are.equal('table', type(results[2].info))
      for i = 3, 4 do
        assert.are.equal('aborted', results[i].code)
        assert.are.equal('string', type(results[i].error))
        assert.truthy(#results[i].error > 0)
      end
      assert.are.equal(0, count_rows(tag))
      assert_idle_outside_transaction()
      assert.are.equal(1, assert(conn:query('select 1 as v'))[1].v)
    end)

    it('commits the statements when none fails', function()
      local tag = 'default-commit'
      conn:pipeline(function(p)
        for i = 1, 3 do p:query(('insert into %s values ($1, $2)'):format(TABLE), tag, i) end
      end)
      assert.are.equal(3, count_rows(tag))
      assert_idle_outside_transaction()
    end)

    it('runs an explicit BEGIN ... COMMIT sent in the pipeline', function()
      local tag = 'explicit-begin'
      local results = conn:pipeline(function(p)
        p:query('begin')
        p:query(('insert into %s values ($1, 1)'):format(TABLE), tag)
        p:query('commit')
      end)
      assert.are.same({ 'BEGIN', 'INSERT', 'COMMIT' },
        { results[1].command, results[2].command, results[3].command })
      assert.are.equal(1, count_rows(tag))
      assert_idle_outside_transaction()
    end)

    it('returns a statement that is a multi-command string as an error entry (42601), not a raise', function()
      local results = conn:pipeline(function(p)
        p:query('select 1; select 2')
        p:query('select 5 as v')
      end)
      assert.are.equal('42601', results[1].code)
      assert.are.equal('aborted', results[2].code)
      assert.are.equal(1, assert(conn:query('select 1 as v'))[1].v)
    end)
  end)

  describe('with isolate = true', function()
    it('fails only the failing statement; the later ones run and the earlier writes are kept', function()
      local tag = 'isolate-mode'
      local results = conn:pipeline(function(p)
        p:query(('insert into %s values ($1, 1)'):format(TABLE), tag)
        p:query('select 1/0 as v')
        p:query(('insert into %s values ($1, 2)'):format(TABLE), tag)
        p:query(('select count(*)::int as v from %s where tag = $1'):format(TABLE), tag)
      end, { isolate = true })
      assert.are.equal(4, #results)
      assert.are.equal('INSERT', results[1].command)
      assert.are.equal('22012', results[2].code)
      assert.truthy(contains(results[2].error, 'division by zero'), results[2].error)
      assert.are.equal('INSERT', results[3].command)
      assert.is_nil(results[3].error)
      assert.are.equal(2, results[4][1].v)
      assert.are.equal(2, count_rows(tag))
      assert_idle_outside_transaction()
    end)

    it('gives every failing statement its own error', function()
      local results = conn:pipeline(function(p)
        p:query('select 1/0')
        p:query('select * from pipeline_spec_no_such_table')
        p:query('select 3 as v')
      end, { isolate = true })
      assert.are.equal('22012', results[1].code)
      assert.are.equal('42P01', results[2].code)
      assert.are.equal(3, results[3][1].v)
    end)
  end)

  describe('inside a transaction', function()
    it('makes the statements part of it: a raise in fn rolls them back', function()
      local tag = 'in-transaction'
      conn:release()
      conn = nil
      local ok, msg = pool:transaction(function(c)
        local results = c:pipeline(function(p)
          p:query(('insert into %s values ($1, 1)'):format(TABLE), tag)
          p:query(('insert into %s values ($1, 2)'):format(TABLE), tag)
        end)
        assert.are.equal('INSERT', results[2].command)
        error('undo it')
      end)
      assert.is_nil(ok)
      assert.truthy(contains(msg, 'undo it'), msg)
      assert.are.equal(0, count_rows(tag))
      assert.are.equal(0, pool:stats().in_use)
    end)

    it('aborts it on a failing statement, so COMMIT reports 25P02', function()
      local tag = 'in-transaction-error'
      conn:release()
      conn = nil
      local ok, msg, code = pool:transaction(function(c)
        c:pipeline(function(p)
          p:query(('insert into %s values ($1, 1)'):format(TABLE), tag)
          p:query('select 1/0')
        end)
        return true
      end)
      assert.is_nil(ok)
      assert.are.equal('25P02', code, msg)
      assert.are.equal(0, count_rows(tag))
    end)
  end)

  describe('size', function()
    it('runs a 5000-statement pipeline, by default and with isolate = true', function()
      for _, opts in ipairs{ {}, { isolate = true } } do
        local results = conn:pipeline(function(p)
          for i = 1, 5000 do p:query('select $1::int as v', i) end
        end, opts)
        assert.are.equal(5000, #results)
        for i = 1, 5000 do assert(results[i][1].v == i, 'result ' .. i) end
      end
      assert.are.equal(1, assert(conn:query('select 1 as v'))[1].v)
    end)

    it('does not deadlock when requests and results both overflow the socket buffers (2 x 20 MB)', function()
      local big = ('x'):rep(20000)
      local results = conn:pipeline(function(p)
        for _ = 1, 1000 do p:query('select $1::text as v', big) end
      end)
      assert.are.equal(1000, #results)
      assert.are.equal(big, results[1][1].v)
      assert.are.equal(big, results[1000][1].v)
    end)
  end)

  describe('misuse', function()
    local MISUSE = {
      { 'fn that is not a function', function(c) return c:pipeline('select 1') end, 'fn' },
      { 'a non-string sql', function(c) return c:pipeline(function(p) p:query(42) end) end, 'sql' },
      { 'a missing sql', function(c) return c:pipeline(function(p) p:query() end) end, 'sql' },
      { 'an unknown option, naming it', function(c) return c:pipeline(function() end, { isolated = true }) end, 'isolated' },
      { 'a non-boolean isolate', function(c) return c:pipeline(function() end, { isolate = 'yes' }) end, 'isolate' },
      { 'options that are not a table', function(c) return c:pipeline(function() end, true) end, 'options' },
      { 'a bad parameter, naming its number', function(c)
          return c:pipeline(function(p) p:query('select 1') p:query('select $1, $2', 1, print) end)
        end, 'parameter 2' },
      { 'an error raised by fn', function(c)
          return c:pipeline(function(p) p:query('select 1') error('fn failed', 0) end)
        end, 'fn failed' },
    }
    for _, case in ipairs(MISUSE) do
      it('raises for ' .. case[1] .. ' and sends nothing', function()
        local queries = pool:stats().queries
        local ok, err = pcall(case[2], conn)
        assert.is_false(ok)
        assert.truthy(contains(err, case[3]), err)
        assert.are.equal(queries, pool:stats().queries)
        assert.are.equal(1, assert(conn:query('select 1 as v'))[1].v)
      end)
    end

    it('raises "pgpool: connection released" on a released connection', function()
      local c = conn
      conn = nil
      c:release()
      local ok, err = pcall(c.pipeline, c, function(p) p:query('select 1') end)
      assert.is_false(ok)
      assert.truthy(contains(err, 'connection released'), err)
    end)
  end)

  describe('with query_timeout', function()
    it('cancels a statement running past it: code "timeout", 57014 kept in info.sqlstate', function()
      local timed = pgpool.configure{ name = 'pipeline_spec_timeout', conninfo = helpers.dsn(), max = 1,
        query_timeout = 0.3, log_level = 'warn' }
      local c = assert(timed:acquire())
      local t0 = helpers.now()
      local results = c:pipeline(function(p)
        p:query('select 1 as v')
        p:query('select pg_sleep(5)')
        p:query('select 3 as v')
      end, { isolate = true })
      local elapsed = helpers.now() - t0
      local after = c:query('select 4 as v')
      c:release()
      assert.is_true(elapsed < 3, ('took %.2f s'):format(elapsed))
      assert.are.equal(1, results[1][1].v)
      assert.are.equal('timeout', results[2].code)
      assert.are.equal('57014', results[2].info.sqlstate)
      assert.are.equal(3, results[3][1].v)
      assert.are.equal(4, assert(after)[1].v)
    end)
  end)

  describe('stats', function()
    it('counts every statement of a pipeline in stats().queries', function()
      local before = pool:stats().queries
      conn:pipeline(function(p) for _ = 1, 7 do p:query('select 1') end end)
      assert.are.equal(before + 7, pool:stats().queries)
      conn:pipeline(function(p) for _ = 1, 3 do p:query('select 1') end end, { isolate = true })
      assert.are.equal(before + 10, pool:stats().queries)
    end)

    it('counts a failing statement in stats().query_errors', function()
      local before = pool:stats().query_errors
      conn:pipeline(function(p) p:query('select 1') p:query('select 1/0') p:query('select 2') end,
        { isolate = true })
      assert.are.equal(before + 1, pool:stats().query_errors)
    end)
  end)
end)

-- One round trip, measured through the fault proxy in delay mode ------------------

describe('conn:pipeline round trips', function()
  local DELAY = 0.15

  it('sends the whole batch in one round trip (20 statements in < 3 delays, sequential needs 20)', function()
    -- DELAY per round trip: half of it each way
    local proxy = helpers.fault_proxy{ mode = 'delay', arg = math.floor(DELAY * 1000 / 2) }
    finally(function() proxy:stop() end)
    -- Its own application_name: its backend ends a delay after the pool closes,
    -- and must not count as a lingering 'pgpool' backend in later specs.
    local slow = pgpool.configure{ name = 'pipeline_spec_slow', max = 1, log_level = 'warn',
      conninfo = proxy:conninfo() .. ' application_name=pipeline_spec_proxy' }
    local c = assert(slow:acquire())

    -- the proxy works: three sequential queries take three delays at least
    local t0 = helpers.now()
    for i = 1, 3 do assert(c:query('select $1::int as v', i)) end
    local sequential = helpers.now() - t0
    assert.is_true(sequential >= 3 * DELAY * 0.9, ('3 sequential queries took only %.3f s'):format(sequential))

    for _, opts in ipairs{ {}, { isolate = true } } do
      t0 = helpers.now()
      local results = c:pipeline(function(p)
        for i = 1, 20 do p:query('select $1::int as v', i) end
      end, opts)
      local elapsed = helpers.now() - t0
      assert.are.equal(20, #results)
      assert.are.equal(20, results[20][1].v)
      assert.is_true(elapsed < 3 * DELAY,
        ('pipeline of 20 (isolate = %s) took %.3f s = %.1f round trips of %.2f s')
          :format(tostring(opts.isolate), elapsed, elapsed / DELAY, DELAY))
    end
    c:release()
    slow:shutdown{ timeout = 1 }
    assert.is_true(helpers.wait_until(function()
      return helpers.count_backends('pipeline_spec_proxy') == 0
    end, 5), 'the proxied backend is gone')
  end)
end)
