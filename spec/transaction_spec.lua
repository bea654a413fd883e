-- transaction(fn, opts) and with(fn), on the module (the "default" pool) and
-- on a pool handle. Both pools have max = 1, so a connection that was not
-- given back would make the next acquire{timeout = 0} fail at once.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local contains = helpers.contains

local TABLE = 'transaction_spec_rows'

local create_table, drop_table, count_rows = helpers.tagged_table(TABLE)

local function pack(...) return { n = select('#', ...), ... } end

setup(create_table)
teardown(drop_table)

-- The same specs for both ways of calling.
local TARGETS = {
  {
    name = 'pgpool.transaction / pgpool.with (the "default" pool)',
    setup = function()
      pgpool.configure{ conninfo = helpers.dsn(), max = 1, acquire_timeout = 2, log_level = 'warn' }
      return pgpool.pool('default')
    end,
    transaction = function(_, fn, opts) return pgpool.transaction(fn, opts) end,
    with = function(_, fn) return pgpool.with(fn) end,
  },
  {
    name = 'pool:transaction / pool:with (a pool handle)',
    setup = function()
      return pgpool.configure{ name = 'transaction_spec', conninfo = helpers.dsn(), max = 1,
        acquire_timeout = 2, log_level = 'warn' }
    end,
    transaction = function(pool, fn, opts) return pool:transaction(fn, opts) end,
    with = function(pool, fn) return pool:with(fn) end,
  },
}

for _, target in ipairs(TARGETS) do
  describe(target.name, function()
    local pool, tag_serial = nil, 0

    local function transaction(fn, opts) return target.transaction(pool, fn, opts) end
    local function with(fn) return target.with(pool, fn) end

    -- A tag unique to this test, for its rows.
    local function new_tag()
      tag_serial = tag_serial + 1
      return ('%s-%d'):format(target.name:sub(1, 6), tag_serial)
    end

    -- The connection went back to the pool: nothing in use, and (max = 1)
    -- an acquire that may only wait long enough to connect succeeds, on a
    -- connection that is not inside a transaction.
    local function assert_released()
      assert.are.equal(0, pool:stats().in_use)
      local conn, msg = pool:acquire{ timeout = 0.5 }
      assert(conn, msg)
      local res, err, code = conn:query('savepoint outside')
      conn:release()
      assert.is_nil(res)
      assert.are.equal('25P01', code, err)   -- SAVEPOINT only works inside a transaction
    end

    before_each(function()
      pool = target.setup()
    end)

    after_each(function()
      pgpool.shutdown_all{ timeout = 1 }
    end)

    describe('transaction', function()
      it('commits: rows written in fn are visible from another connection afterwards', function()
        local tag = new_tag()
        local ok, msg = transaction(function(conn)
          assert(conn:query(('insert into %s values ($1, 1), ($1, 2)'):format(TABLE), tag))
        end)
        assert.is_true(ok, msg)
        assert.are.equal(2, count_rows(tag))
        assert_released()
      end)

      it('runs fn inside a transaction block on the connection it passes', function()
        local inside
        assert(transaction(function(conn)
          local res, msg = conn:query('savepoint inside')
          inside = res and res.command or msg
        end))
        assert.are.equal('SAVEPOINT', inside)
        assert_released()
      end)

      it("returns fn's results, all of them, nils included", function()
        local r = pack(transaction(function() return 1, nil, 'three', false end))
        assert.are.equal(4, r.n)
        assert.are.equal(1, r[1])
        assert.is_nil(r[2])
        assert.are.equal('three', r[3])
        assert.is_false(r[4])
        assert_released()
      end)

      it('returns exactly true when fn returns nothing', function()
        local r = pack(transaction(function() end))
        assert.are.equal(1, r.n)
        assert.is_true(r[1])
        assert_released()
      end)

      it('rolls back when fn raises and returns nil plus a message containing the error', function()
        local tag = new_tag()
        local r = pack(transaction(function(conn)
          assert(conn:query(('insert into %s values ($1, 1)'):format(TABLE), tag))
          error('boom in fn')
        end))
        assert.is_nil(r[1])
        assert.truthy(contains(r[2], 'boom in fn'), r[2])
        assert.are.equal('string', type(r[2]))
        assert.are.equal(0, count_rows(tag))
        assert_released()
      end)

      it('rolls back when fn raises a non-string error, returning that error', function()
        local tag = new_tag()
        local raised = { reason = 'table error' }
        local ok, err, code = transaction(function(conn)
          assert(conn:query(('insert into %s values ($1, 1)'):format(TABLE), tag))
          error(raised)
        end)
        assert.is_nil(ok)
        assert.are.equal(raised, err)
        assert.are.equal('error', code)
        assert.are.equal(0, count_rows(tag))
        assert_released()
      end)

      it('rolls back when fn returns nil, msg, code and returns nil, msg, code', function()
        local tag = new_tag()
        local r = pack(transaction(function(conn)
          assert(conn:query(('insert into %s values ($1, 1)'):format(TABLE), tag))
          return nil, 'refused by fn', 'E_FN'
        end))
        assert.is_nil(r[1])
        assert.are.equal('refused by fn', r[2])
        assert.are.equal('E_FN', r[3])
        assert.are.equal(0, count_rows(tag))
        assert_released()
      end)

      it('rolls back when fn passes on a failed query (nil, msg, code from conn:query)', function()
        local tag = new_tag()
        local ok, msg, code = transaction(function(conn)
          assert(conn:query(('insert into %s values ($1, 1)'):format(TABLE), tag))
          return conn:query('select * from transaction_spec_no_such_table')
        end)
        assert.is_nil(ok)
        assert.are.equal('42P01', code)
        assert.truthy(contains(msg, 'transaction_spec_no_such_table'), msg)
        assert.are.equal(0, count_rows(tag))
        assert_released()
      end)

      it('reports a failed COMMIT (nil, msg, "25P02") when fn swallowed a statement error', function()
        local tag = new_tag()
        local r = pack(transaction(function(conn)
          assert(conn:query(('insert into %s values ($1, 1)'):format(TABLE), tag))
          local res = conn:query('select 1/0')       -- fails; fn ignores it
          assert.is_nil(res)
          return 'fn thinks all is well'
        end))
        assert.is_nil(r[1])
        assert.are.equal('string', type(r[2]))
        assert.truthy(#r[2] > 0)
        assert.are.equal('25P02', r[3])
        assert.are.equal(0, count_rows(tag))
        assert_released()
      end)

      it('returns nil, msg, "closed" and commits nothing when fn released the connection itself', function()
        local tag = new_tag()
        local ok, msg, code = transaction(function(conn)
          assert(conn:query(('insert into %s values ($1, 1)'):format(TABLE), tag))
          conn:release()
        end)
        assert.is_nil(ok)
        assert.truthy(contains(msg, 'connection released'), msg)
        assert.are.equal('closed', code)
        assert.are.equal(0, count_rows(tag))
        assert_released()
      end)

      local LEVELS = {
        { 'serializable', 'serializable' },
        { 'repeatable read', 'repeatable read' },
        { 'read committed', 'read committed' },
        { 'read uncommitted', 'read uncommitted' },
        { 'SERIALIZABLE', 'serializable' },
      }
      for _, level in ipairs(LEVELS) do
        it(('runs fn at isolation = %q (show transaction_isolation says %s)'):format(level[1], level[2]), function()
          local shown = assert(transaction(function(conn)
            return assert(conn:query('show transaction_isolation'))[1].transaction_isolation
          end, { isolation = level[1] }))
          assert.are.equal(level[2], shown)
          assert_released()
        end)
      end

      it('defaults to the server default isolation (read committed) without options', function()
        local shown = assert(transaction(function(conn)
          return assert(conn:query('show transaction_isolation'))[1].transaction_isolation
        end))
        assert.are.equal('read committed', shown)
      end)

      it('makes writes fail with 25006 when read_only = true, and rolls back', function()
        local tag = new_tag()
        local r = pack(transaction(function(conn)
          assert.are.equal('on', assert(conn:query('show transaction_read_only'))[1].transaction_read_only)
          return conn:query(('insert into %s values ($1, 1)'):format(TABLE), tag)
        end, { read_only = true }))
        assert.is_nil(r[1])
        assert.are.equal('25006', r[3], r[2])
        assert.are.equal(0, count_rows(tag))
        assert_released()
      end)

      it('allows writes when read_only = false', function()
        local tag = new_tag()
        assert(transaction(function(conn)
          assert.are.equal('off', assert(conn:query('show transaction_read_only'))[1].transaction_read_only)
          assert(conn:query(('insert into %s values ($1, 1)'):format(TABLE), tag))
        end, { read_only = false }))
        assert.are.equal(1, count_rows(tag))
      end)

      it('accepts deferrable (serializable read only deferrable is in effect inside)', function()
        local shown = assert(transaction(function(conn)
          return assert(conn:query('show transaction_deferrable'))[1].transaction_deferrable
        end, { isolation = 'serializable', read_only = true, deferrable = true }))
        assert.are.equal('on', shown)
        assert_released()
      end)

      local MISUSE = {
        { 'an unknown option, naming it', function() return transaction(function() end, { isolation_level = 'serializable' }) end,
          'isolation_level' },
        { 'a bad isolation level, naming the option', function() return transaction(function() end, { isolation = 'snapshot' }) end,
          'isolation' },
        { 'a non-string isolation, naming the option', function() return transaction(function() end, { isolation = 1 }) end,
          'isolation' },
        { 'a non-boolean read_only, naming it', function() return transaction(function() end, { read_only = 'yes' }) end,
          'read_only' },
        { 'a non-boolean deferrable, naming it', function() return transaction(function() end, { deferrable = 1 }) end,
          'deferrable' },
        { 'options that are not a table', function() return transaction(function() end, 'serializable') end,
          'options' },
        { 'fn that is not a function', function() return transaction('select 1') end, 'fn' },
      }
      for _, case in ipairs(MISUSE) do
        it('raises for ' .. case[1] .. ', without checking out a connection', function()
          local before = pool:stats().acquired
          local ok, err = pcall(case[2])
          assert.is_false(ok)
          assert.truthy(contains(err, case[3]), err)
          assert.are.equal(before, pool:stats().acquired)
          assert_released()
        end)
      end

      it('rejects a nested transaction inside fn at once, with an error about nesting', function()
        local inner_ok, inner_err
        local started = helpers.now()
        local r = pack(transaction(function()
          inner_ok, inner_err = pcall(transaction, function() return 'inner ran' end)
          return 'outer done'
        end))
        assert.is_false(inner_ok)
        assert.truthy(contains(inner_err, 'nested'), inner_err)
        assert.is_true(helpers.now() - started < 1.5, 'rejected at once, not after acquire_timeout')
        assert.are.equal('outer done', r[1])
        assert_released()
      end)

      it('rejects a nested pool:transaction inside fn too, and rolls back when it propagates', function()
        local tag = new_tag()
        local ok, msg = transaction(function(conn)
          assert(conn:query(('insert into %s values ($1, 1)'):format(TABLE), tag))
          return pool:transaction(function() return 'inner ran' end)
        end)
        assert.is_nil(ok)
        assert.truthy(contains(msg, 'nested'), msg)
        assert.are.equal(0, count_rows(tag))
        assert_released()
      end)

      it('allows a new transaction after one that raised (nesting state is reset)', function()
        assert.is_nil((transaction(function() error('first') end)))
        assert.are.equal('second', transaction(function() return 'second' end))
        assert_released()
      end)

      it('releases the connection it passed: using it after the transaction raises', function()
        local kept
        assert(transaction(function(conn) kept = conn end))
        local ok, err = pcall(kept.query, kept, 'select 1')
        assert.is_false(ok)
        assert.truthy(contains(err, 'connection released'), err)
        assert_released()
      end)

      it('returns nil, msg, "timeout" when no connection frees up within opts.timeout', function()
        local holder = assert(pool:acquire())
        local started = helpers.now()
        local ok, msg, code = transaction(function() return 'ran' end, { timeout = 0.2 })
        local waited = helpers.now() - started
        holder:release()
        assert.is_nil(ok)
        assert.are.equal('timeout', code, msg)
        assert.is_true(waited < 1.5, 'waited ' .. waited .. ' s')
        assert_released()
      end)
    end)

    describe('with', function()
      it("returns fn's results, all of them, and releases the connection", function()
        local r = pack(with(function(conn)
          return assert(conn:query('select 42 as v'))[1].v, nil, 'x'
        end))
        assert.are.equal(3, r.n)
        assert.are.equal(42, r[1])
        assert.is_nil(r[2])
        assert.are.equal('x', r[3])
        assert_released()
      end)

      it('re-raises the error of fn and releases the connection', function()
        local ok, err = pcall(with, function() error('with failed', 0) end)
        assert.is_false(ok)
        assert.are.equal('with failed', err)
        assert_released()
      end)

      it('re-raises a non-string error object unchanged', function()
        local object = { reason = 'table error' }
        local ok, err = pcall(with, function() error(object) end)
        assert.is_false(ok)
        assert.are.equal(object, err)
        assert_released()
      end)

      it('releases a connection left inside a transaction, rolled back', function()
        local tag = new_tag()
        with(function(conn)
          assert(conn:exec('begin'))
          assert(conn:query(('insert into %s values ($1, 1)'):format(TABLE), tag))
        end)
        assert.are.equal(0, count_rows(tag))
        assert_released()
      end)

      it('raises for fn that is not a function', function()
        local ok, err = pcall(with, 42)
        assert.is_false(ok)
        assert.truthy(contains(err, 'fn'), err)
        assert_released()
      end)
    end)
  end)
end

describe('transaction nesting across coroutines', function()
  after_each(function()
    pgpool.shutdown_all{ timeout = 1 }
  end)

  it('is tracked per coroutine: another coroutine may run its own transaction meanwhile', function()
    local pool = pgpool.configure{ name = 'transaction_spec_co', conninfo = helpers.dsn(), max = 2, log_level = 'warn' }
    local outer = coroutine.create(function()
      return pool:transaction(function()
        coroutine.yield('paused inside')
        return 'outer committed'
      end)
    end)
    assert.are.same({ true, 'paused inside' }, { coroutine.resume(outer) })
    local inner = coroutine.wrap(function()
      return pool:transaction(function(conn) return assert(conn:query('select 7 as v'))[1].v end)
    end)
    assert.are.equal(7, inner())
    assert.are.same({ true, 'outer committed' }, { coroutine.resume(outer) })
    assert.are.equal(0, pool:stats().in_use)
  end)
end)
