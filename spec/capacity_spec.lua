-- A pool whose max is more than the server can give ordinary roles says so
-- once, on its first connection: a warning naming both figures, the
-- server's figure in stats().server_slots, and a warning in health().
-- Against a second throwaway server of this spec's own with
-- max_connections = 20 (superuser_reserved_connections 3: 17 slots).
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local shquote, run, must_run = helpers.shquote, helpers.run, helpers.must_run

describe('server capacity', function()
  local dir, dsn, lines

  setup(function()
    dir = must_run('mktemp -d "${TMPDIR:-/tmp}/pgpool-capacity.XXXXXX"')
    must_run('spec/support/pgserver.sh start ' .. shquote(dir) .. ' 20')
    local port = helpers.read_file(dir .. '/env'):match('PGPOOL_TEST_PORT=(%d+)')
    assert(port, 'no port in ' .. dir .. '/env')
    dsn = ('host=127.0.0.1 port=%s dbname=pgpool_test user=postgres'):format(port)
  end)

  teardown(function()
    pgpool.shutdown_all{ timeout = 1 }
    pgpool.on_log(nil)
    if dir then run('spec/support/pgserver.sh stop ' .. shquote(dir)) end
  end)

  before_each(function() lines = helpers.capture_log(pgpool) end)

  after_each(function()
    pgpool.shutdown_all{ timeout = 1 }
    pgpool.on_log(nil)
  end)

  local function warnings(pool)
    pool:stats()      -- delivers the log lines
    return helpers.log_lines(lines, 'connections the server allows ordinary roles')
  end

  it('warns once that max 30 exceeds the 17 connections the server allows ordinary roles', function()
    local pool = pgpool.configure{ name = 'capacity-over', conninfo = dsn, max = 30, log_level = 'warn' }
    local held = {}
    for i = 1, 3 do held[i] = assert(pool:acquire{ timeout = 5 }) end
    for i = 1, 3 do held[i]:release() end
    local found = warnings(pool)
    assert.are.equal(1, #found)
    assert.are.equal('warn', found[1].level)
    assert.matches('pool "capacity-over": max 30 exceeds the 17 connections the server allows '
      .. 'ordinary roles (max_connections 20 - 3 reserved)', found[1].message, 1, true)
    assert.are.equal(17, pool:stats().server_slots)
  end)

  it('shows the server\'s slots in health() as a warning', function()
    local pool = pgpool.configure{ name = 'capacity-health', conninfo = dsn, max = 30, log_level = 'off' }
    assert(pool:query('select 1'))
    local health = pool:health()
    assert.are.equal('warning', health.status)
    assert.truthy(helpers.contains(table.concat(health.reasons, '; '), "max 30 exceeds the server's 17 slots"),
      table.concat(health.reasons, '; '))
  end)

  it('keeps quiet, with server_slots known, when max fits', function()
    local pool = pgpool.configure{ name = 'capacity-fits', conninfo = dsn, max = 10, log_level = 'warn' }
    assert(pool:query('select 1'))
    assert.are.equal(0, #warnings(pool))
    assert.are.equal(17, pool:stats().server_slots)
    assert.are.equal('ok', pool:health().status)
  end)

  it('has no server_slots before the first connection', function()
    local pool = pgpool.configure{ name = 'capacity-unknown', conninfo = dsn, max = 30, log_level = 'off' }
    assert.is_nil(pool:stats().server_slots)
  end)
end)
