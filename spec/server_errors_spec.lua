-- What the server said survives a failure: a backend terminated under a
-- checked-out connection reports 57P01 and the server's message, and a
-- failed connect is one clean line with the SQLSTATE in info.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

local function terminate(pid)
  helpers.psql('select pg_terminate_backend(' .. pid .. ')')
  assert(helpers.wait_until(function()
    return helpers.psql('select count(*) from pg_stat_activity where pid = ' .. pid) == '0'
  end))
end

-- A message fit for one log line: no newline, no libpq noise.
local function assert_clean(msg)
  assert.is_string(msg)
  assert.falsy(msg:find('\n', 1, true), msg)
  assert.falsy(msg:find('FATAL:', 1, true), msg)
  assert.falsy(msg:find('ERROR:', 1, true), msg)
  local _, mentions = msg:gsub('connection to server', '')
  assert.is_true(mentions <= 1, msg)
end

describe('a backend terminated under a checked-out connection', function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  local cases = {
    { 'query', 'select 1', 0 },
    { 'query', 'select 1', 5 },
    { 'exec', 'select 1; select 2', 0 },
  }
  for i, case in ipairs(cases) do
    local method, sql, query_timeout = case[1], case[2], case[3]
    it(('reports 57P01 and the server message to %s (query_timeout = %d)'):format(method, query_timeout), function()
      if helpers.via_pgbouncer() then
        return pending('through PgBouncer: a checked-out connection outside a transaction has no backend of its own to terminate')
      end
      local pool = pgpool.configure(opts('terminated-' .. i, { max = 1, query_timeout = query_timeout, log_level = 'off' }))
      local conn = assert(pool:acquire())
      terminate(conn:backend_pid())
      local res, msg, code, info = conn[method](conn, sql)
      assert.is_nil(res)
      assert.are.equal('57P01', info.sqlstate, msg)
      assert.are.equal('57P01', code)
      assert.truthy(msg:find('terminating connection due to administrator command', 1, true), msg)
      assert_clean(msg)
      conn:release()
      assert.are.equal(1, pool:stats().closed_broken)
    end)
  end
end)

describe('a failed connect', function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  local function connect_error(name, conninfo)
    local pool = pgpool.configure{ name = name, conninfo = conninfo, max = 1, log_level = 'off', connect_timeout = 5 }
    local conn, msg, code, info = pool:acquire{ timeout = 5 }
    assert.is_nil(conn)
    assert.are.equal('connect', code)
    assert_clean(msg)
    return msg, info
  end

  it('keeps 28P01 for a wrong password, in one line', function()
    local url = helpers.pw_url():gsub('Secr3t%-Pa55', 'wrong-one')
    local msg, info = connect_error('wrong-password', url)
    if helpers.via_pgbouncer() then   -- PgBouncer checks the password itself, in its own words
      assert.are.equal('08P01', info.sqlstate, msg)
      assert.truthy(msg:find('SASL authentication failed', 1, true), msg)
    else
      assert.are.equal('28P01', info.sqlstate, msg)
      assert.truthy(msg:find('password authentication failed', 1, true), msg)
    end
    assert.truthy(msg:find('127.0.0.1', 1, true), msg)
  end)

  it('keeps 3D000 for a missing database', function()
    local msg, info = connect_error('no-db', helpers.dsn() .. ' dbname=pgpool_no_such_db')
    -- PgBouncer passes the server's message on under its own SQLSTATE
    assert.are.equal(helpers.via_pgbouncer() and '08P01' or '3D000', info.sqlstate, msg)
    assert.truthy(msg:find('pgpool_no_such_db', 1, true), msg)
  end)

  it('keeps 53300 for too many connections', function()
    if helpers.via_pgbouncer() then
      return pending('through PgBouncer: it logs clients in itself and refuses a role its auth_file lacks, before the server\'s connection limit')
    end
    helpers.psql('drop role if exists pgpool_limited; create role pgpool_limited login connection limit 0')
    local msg, info = connect_error('too-many', helpers.dsn() .. ' user=pgpool_limited')
    helpers.psql('drop role pgpool_limited')
    assert.are.equal('53300', info.sqlstate, msg)
  end)

  it('says plainly that nothing listens, in one line', function()
    local msg, info = connect_error('refused', 'host=127.0.0.1 port=1 dbname=x connect_timeout=2')
    assert.is_nil(info.sqlstate)
    assert.truthy(msg:find('127.0.0.1', 1, true), msg)
  end)
end)
