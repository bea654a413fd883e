-- COPY ... FROM STDIN and TO STDOUT: conn:copy_in / conn:copy_out (and the
-- pool's), chunk by chunk, with the server's errors as nil, msg, code, info,
-- nothing half-copied, and the connection usable after any failure.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local TABLE = 'copy_io_t'

local function count()
  return tonumber(helpers.psql('select count(*) from ' .. TABLE))
end

describe('COPY', function()
  local pool, conn
  local open, close = helpers.held_connection('copy', { max = 2, log_level = 'off' }, function(p, c)
    pool, conn = p, c
    assert(conn:exec(('drop table if exists %s; create table %s (id int primary key, name text)'):format(TABLE, TABLE)))
  end)
  before_each(open)
  after_each(function()
    close()
    helpers.psql('drop table if exists ' .. TABLE)
  end)

  describe('copy_in', function()
    it('loads a string, a list of chunks and a function of chunks', function()
      local res = assert(conn:copy_in('copy ' .. TABLE .. ' from stdin', '1\tone\n2\ttwo\n'))
      assert.are.equal(2, res.affected)
      assert.are.equal('COPY', res.command)
      res = assert(conn:copy_in({ 'copy ' .. TABLE .. ' from stdin (format csv)', timeout = 10 },
        { '3,three\n', '4,', 'four\n' }))
      assert.are.equal(2, res.affected)
      local i = 4
      res = assert(conn:copy_in('copy ' .. TABLE .. ' from stdin', function()
        i = i + 1
        if i <= 1000 then return ('%d\tname %d\n'):format(i, i) end
      end))
      assert.are.equal(996, res.affected)
      assert.are.equal(1000, count())
      assert.are.equal('name 1000', conn:query('select name from ' .. TABLE .. ' where id = 1000')[1].name)
    end)

    it('copies nothing when a row is bad, returning the server error', function()
      local res, msg, code, info = conn:copy_in('copy ' .. TABLE .. ' from stdin', '1\tone\nnot a number\ttwo\n')
      assert.is_nil(res)
      assert.are.equal('22P02', code)
      assert.are.equal('22P02', info.sqlstate)
      assert.truthy(msg:find('invalid input syntax', 1, true), msg)
      assert.are.equal(0, count())
      assert.are.equal(1, conn:query('select 1 as x')[1].x)
    end)

    it('copies nothing when the source raises, and raises that error unchanged', function()
      local raised = { why = 'source failed' }
      local sent = 0
      local ok, err = pcall(conn.copy_in, conn, 'copy ' .. TABLE .. ' from stdin', function()
        sent = sent + 1
        if sent > 3 then error(raised) end
        return ('%d\tx\n'):format(sent)
      end)
      assert.is_false(ok)
      assert.are.equal(raised, err)
      assert.are.equal(0, count())
      assert.are.equal(1, conn:query('select 1 as x')[1].x)
    end)

    it('refuses a source chunk that is not a string, copying nothing', function()
      local ok, err = pcall(conn.copy_in, conn, 'copy ' .. TABLE .. ' from stdin', { '1\tone\n', 42 })
      assert.is_false(ok)
      assert.truthy(err:find('bad chunk 2', 1, true), err)
      assert.are.equal(0, count())
      assert.are.equal(1, conn:query('select 1 as x')[1].x)
    end)

    it('says "unsupported" for a statement that is not COPY FROM STDIN', function()
      for _, sql in ipairs{ 'select 1', 'copy ' .. TABLE .. ' to stdout' } do
        local res, msg, code = conn:copy_in(sql, '')
        assert.is_nil(res)
        assert.are.equal('unsupported', code, msg)
        assert.are.equal(1, conn:query('select 1 as x')[1].x)
      end
    end)
  end)

  describe('copy_out', function()
    before_each(function()
      assert(conn:exec('insert into ' .. TABLE .. " select g, 'n' || g from generate_series(1, 5000) g"))
    end)

    it('gives every row to the sink', function()
      local chunks = {}
      local res = assert(conn:copy_out('copy (select * from ' .. TABLE .. ' order by id) to stdout (format csv)',
        function(chunk) chunks[#chunks + 1] = chunk end))
      assert.are.equal(5000, res.affected)
      assert.are.equal(5000, #chunks)
      assert.are.equal('1,n1\n', chunks[1])
      assert.are.equal('5000,n5000\n', chunks[5000])
    end)

    it('cancels the COPY when the sink raises, and the connection is usable', function()
      local seen = 0
      local ok, err = pcall(conn.copy_out, conn, 'copy (select g from generate_series(1, 10000000) g) to stdout',
        function() seen = seen + 1; if seen == 10 then error('sink is full', 0) end end)
      assert.is_false(ok)
      assert.are.equal('sink is full', err)
      assert.are.equal(10, seen)
      assert.are.equal(1, conn:query('select 1 as x')[1].x)
    end)

    it('returns the server error of a failing COPY', function()
      local res, _, code = conn:copy_out('copy (select 1 / (g - 3) from generate_series(1, 5) g) to stdout', function() end)
      assert.is_nil(res)
      assert.are.equal('22012', code)
      assert.are.equal(1, conn:query('select 1 as x')[1].x)
    end)

    it('is bounded by the statement timeout', function()
      local t0 = helpers.now()
      local res, _, code = conn:copy_out({ 'copy (select pg_sleep(10)) to stdout', timeout = 0.3 }, function() end)
      assert.is_nil(res)
      assert.are.equal('timeout', code)
      assert.truthy(helpers.now() - t0 < 4)
      assert.are.equal(1, conn:query('select 1 as x')[1].x)
    end)
  end)

  it('runs on a pool and the default pool', function()
    assert.are.equal(2, pool:copy_in('copy ' .. TABLE .. ' from stdin', '1\ta\n2\tb\n').affected)
    local n = 0
    assert(pool:copy_out('copy ' .. TABLE .. ' to stdout', function() n = n + 1 end))
    assert.are.equal(2, n)
    pgpool.configure(helpers.pool_options('default', { max = 1 }))
    assert.are.equal(1, pgpool.copy_in('copy ' .. TABLE .. ' from stdin', '3\tc\n').affected)
  end)

  it('ends the COPY when its source or sink runs a statement on the same connection: "closed", nothing copied', function()
    local n = 0
    local res, msg, code = conn:copy_in('copy ' .. TABLE .. ' from stdin', function()
      n = n + 1
      if n == 1 then return '1\ta\n' end
      if n == 2 then assert(conn:query('select 1')) return '2\tb\n' end
    end)
    assert.is_nil(res)
    assert.are.equal('closed', code, msg)
    assert.are.equal(0, count())
    res, msg, code = conn:copy_out('copy (select g from generate_series(1, 100000) g) to stdout', function()
      assert(conn:query('select 1'))
    end)
    assert.is_nil(res)
    assert.are.equal('closed', code, msg)
    assert.are.equal(1, conn:query('select 1 as x')[1].x)
    assert.are.equal(1, pool:stats().in_use)
  end)

  it('gives "shutdown" when the pool is shut down from its source or sink', function()
    local n = 0
    local res, msg, code = conn:copy_in('copy ' .. TABLE .. ' from stdin', function()
      n = n + 1
      if n == 1 then return '1\ta\n' end
      if n == 2 then pool:shutdown{ timeout = 0.1 } return '2\tb\n' end
    end)
    assert.is_nil(res)
    assert.are.equal('shutdown', code, msg)
    assert.are.equal(0, count())
  end)

  it('still refuses COPY in query and exec', function()
    local res, _, code = conn:query('copy ' .. TABLE .. ' from stdin')
    assert.is_nil(res)
    assert.are.equal('unsupported', code)
  end)

  it('refuses a source or sink of the wrong kind', function()
    assert.has_error(function() conn:copy_in('copy ' .. TABLE .. ' from stdin', 42) end)
    assert.has_error(function() conn:copy_out('copy ' .. TABLE .. ' to stdout', 'x') end)
  end)
end)
