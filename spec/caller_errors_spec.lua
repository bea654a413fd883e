-- What a caller sees when its own code goes wrong: errors raised inside
-- transaction(fn) come back as they were raised, a failing on_log handler
-- is reported once, and a script that asks for nothing hears nothing but
-- warnings on stderr.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

describe('errors raised by the caller', function()
  local pool
  before_each(function() pool = pgpool.configure(opts('caller-errors', { max = 2 })) end)
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('come back from transaction(fn) as the very table raised', function()
    local raised = { code = 'E42', why = 'domain rule' }
    local ok, err, code, info = pool:transaction(function(conn)
      assert(conn:exec('select 1'))
      error(raised)
    end)
    assert.is_nil(ok)
    assert.are.equal(raised, err)
    assert.are.equal('error', code)
    assert.is_string(info.traceback)
  end)

  it('come back from transaction(fn) as the string raised, without a traceback in it', function()
    local ok, err, code, info = pool:transaction(function() error('plain words', 0) end)
    assert.is_nil(ok)
    assert.are.equal('plain words', err)
    assert.are.equal('error', code)
    assert.truthy(info.traceback:find('stack traceback', 1, true))
  end)

  it('keep the position error() adds', function()
    local _, err = pool:transaction(function() error('with position') end)
    assert.truthy(err:match('caller_errors_spec%.lua:%d+: with position$'), err)
  end)

  it('still roll the transaction back', function()
    assert(pool:exec('create temporary table if not exists caller_errors_t (v int)'))
    pool:transaction(function(conn)
      assert(conn:exec('insert into caller_errors_t values (1)'))
      error({})
    end)
    -- temporary tables are per session: look on the same connection if any
    local n = 0
    for _ = 1, 2 do
      local res = pool:query("select count(*)::int as n from pg_class where relname = 'caller_errors_t'")
      if res[1].n > 0 then n = pool:query('select count(*)::int as n from caller_errors_t')[1].n end
    end
    assert.are.equal(0, n)
  end)
end)

describe('an on_log handler that raises', function()
  it('is reported once on stderr, then left alone', function()
    local out, err, rc = helpers.run_lua(([[
      local pgpool = require('pgpool')
      pgpool.on_log(function(level, line) error('handler broke on ' .. level) end)
      local pool = pgpool.configure{ name = 'onlog', conninfo = %q, log_level = 'info' }
      for i = 1, 3 do
        local conn = assert(pool:acquire())
        conn:discard()
      end
      pool:query('select 1')
      print('done')
    ]]):format(helpers.dsn()))
    assert.are.equal(0, rc, err)
    assert.are.equal('done\n', out)
    local _, reports = err:gsub('on_log handler raised', '')
    assert.are.equal(1, reports, err)
    assert.truthy(err:find('handler broke on info', 1, true), err)
  end)
end)

describe('a plain script', function()
  it('prints no info lines on stderr by default, only warnings', function()
    local out, err, rc = helpers.run_lua(([[
      local pgpool = require('pgpool')
      local pool = pgpool.configure{ name = 'quiet', conninfo = %q }
      assert(pool:query('select 1'))
      local conn = assert(pool:acquire())
      conn:discard()
      pool:shutdown()
      print(pgpool.pool and 'ok' or 'ok')
    ]]):format(helpers.dsn()))
    assert.are.equal(0, rc, err)
    assert.are.equal('ok\n', out)
    assert.are.equal('', err)
  end)

  it('prints them when asked with log_level = "info"', function()
    local _, err, rc = helpers.run_lua(([[
      local pool = require('pgpool').configure{ name = 'chatty', conninfo = %q, log_level = 'info' }
      assert(pool:query('select 1'))
    ]]):format(helpers.dsn()))
    assert.are.equal(0, rc, err)
    assert.truthy(err:find('new connection', 1, true), err)
  end)
end)
