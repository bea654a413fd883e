-- Multi-host conninfo (host=a,b port=pa,pb): connect_timeout applies to each
-- host, as in libpq's blocking connect, so a first host that accepts TCP
-- and never answers (the fault proxy in stall mode) costs its own
-- connect_timeout, not the whole attempt; the pool's connect_timeout bounds
-- every host together. Then target_session_attrs across a real primary and
-- a streaming standby of this spec's own (pg_basebackup -R).
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local shquote, run, must_run = helpers.shquote, helpers.run, helpers.must_run

local function test_port()
  return tonumber(helpers.tcp_dsn():match('port=(%d+)'))
end

-- A pool on hosts 127.0.0.1 at each of `ports`, with the conninfo's extra
-- options; pool options on top.
local function hosts_pool(name, ports, extra, options)
  local hosts = {}
  for i = 1, #ports do hosts[i] = '127.0.0.1' end
  local o = {
    name = name, log_level = 'off', max = 2,
    conninfo = ('host=%s port=%s dbname=pgpool_test user=postgres application_name=failover_spec %s')
      :format(table.concat(hosts, ','), table.concat(ports, ','), extra or ''),
  }
  for k, v in pairs(options or {}) do o[k] = v end
  return pgpool.configure(o)
end

-- acquire, timed: conn (or nil, msg, code) and the seconds it took.
local function timed_acquire(pool, timeout)
  local t0 = helpers.now()
  local conn, msg, code = pool:acquire{ timeout = timeout }
  return conn, msg, code, helpers.now() - t0
end

describe('multi-host failover', function()
  local stall

  setup(function()
    stall = helpers.fault_proxy{ mode = 'stall' }
  end)

  teardown(function()
    pgpool.shutdown_all{ timeout = 1 }
    if stall then stall:stop() end
  end)

  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('reaches the second host after the first host\'s connect_timeout (2 s) when the first never answers', function()
    local pool = hosts_pool('failover-stall-first', { stall:port(), test_port() }, 'connect_timeout=2',
      { connect_timeout = 6 })
    local conn, msg, _, took = timed_acquire(pool, 8)
    assert.truthy(conn, msg)
    local res = assert(conn:query('select inet_server_port() as port'))
    conn:release()
    assert.are.equal(test_port(), res[1].port)
    assert.is_true(took >= 1.9 and took < 3.5, ('reached host b after %.2f s'):format(took))
  end)

  it('lets a connect_timeout in the conninfo win over the pool\'s for one host, naming it on timeout', function()
    local pool = hosts_pool('failover-conninfo-timeout', { stall:port() }, 'connect_timeout=2',
      { connect_timeout = 10 })
    local conn, msg, code, took = timed_acquire(pool, 12)
    assert.is_nil(conn)
    assert.are.equal('connect', code)
    assert.are.equal(('could not connect to server at "127.0.0.1", port %d: timed out after 2 s')
      :format(stall:port()), msg)
    assert.is_true(took >= 1.9 and took < 3.5, ('gave up after %.2f s'):format(took))
  end)

  it('bounds every host together by the pool\'s connect_timeout', function()
    local pool = hosts_pool('failover-pool-bound', { stall:port(), stall:port(), test_port() },
      'connect_timeout=2', { connect_timeout = 3 })
    local conn, msg, code, took = timed_acquire(pool, 10)
    assert.is_nil(conn)
    assert.are.equal('connect', code)
    assert.is_true(took >= 2.9 and took < 4.5, ('gave up after %.2f s'):format(took))
    assert.matches('timed out after 2 s', msg, 1, true)
    assert.matches('timed out after 1 s', msg, 1, true)
  end)

  it('names every host tried and why in one line when all fail', function()
    local pool = hosts_pool('failover-all-fail', { stall:port(), 1 }, 'connect_timeout=2',
      { connect_timeout = 10 })
    local conn, msg, code = timed_acquire(pool, 12)
    assert.is_nil(conn)
    assert.are.equal('connect', code)
    assert.is_nil(msg:find('\n', 1, true), msg)
    assert.matches(('"127.0.0.1", port %d: timed out after 2 s'):format(stall:port()), msg, 1, true)
    assert.matches('"127.0.0.1", port 1: Connection refused', msg, 1, true)
  end)

  it('connects to a single host as before when the conninfo has no connect_timeout', function()
    local pool = hosts_pool('failover-single', { test_port() })
    local res = assert(pool:query('select inet_server_port() as port'))
    assert.are.equal(test_port(), res[1].port)
  end)

  it('keeps a pool connect_timeout of 0 meaning no limit while a per-host one applies', function()
    local pool = hosts_pool('failover-no-pool-limit', { stall:port(), test_port() }, 'connect_timeout=2',
      { connect_timeout = 0 })
    local conn, msg, _, took = timed_acquire(pool, 8)
    assert.truthy(conn, msg)
    conn:release()
    assert.is_true(took < 3.5, ('reached host b after %.2f s'):format(took))
  end)
end)

describe('target_session_attrs across a primary and a standby', function()
  local primary_dir, standby_dir, primary, standby, standby_server

  setup(function()
    primary_dir = must_run('mktemp -d "${TMPDIR:-/tmp}/pgpool-primary.XXXXXX"')
    helpers.write_file(primary_dir .. '/pg_hba.conf', 'local all all trust\n'
      .. 'local replication postgres trust\nhost all all 127.0.0.1/32 trust\n')
    must_run(('PGSERVER_HBA=%s spec/support/pgserver.sh start %s 20')
      :format(shquote(primary_dir .. '/pg_hba.conf'), shquote(primary_dir)))
    primary = tonumber(helpers.read_file(primary_dir .. '/env'):match('PGPOOL_TEST_PORT=(%d+)'))
    standby_server = helpers.standby(primary_dir)
    standby_dir, standby = standby_server.dir, standby_server.port
    assert(primary and standby, 'no port for the primary or the standby')
  end)

  teardown(function()
    pgpool.shutdown_all{ timeout = 1 }
    for _, dir in ipairs{ standby_dir, primary_dir } do
      if dir then run('spec/support/pgserver.sh stop ' .. shquote(dir)) end
    end
  end)

  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  -- Where a pool on `ports` with target_session_attrs=`attrs` lands:
  -- the port and whether the server is in recovery.
  local function lands_on(name, ports, attrs)
    local pool = hosts_pool(name, ports, 'connect_timeout=2 target_session_attrs=' .. attrs)
    local res = assert(pool:query('select inet_server_port() as port, pg_is_in_recovery() as standby'))
    return res[1].port, res[1].standby
  end

  -- target_session_attrs, the server listed first, where it lands
  for _, case in ipairs{
    { 'read-write', 'standby', 'primary' },
    { 'primary', 'standby', 'primary' },
    { 'prefer-standby', 'primary', 'standby' },
    { 'standby', 'primary', 'standby' },
    { 'read-only', 'primary', 'standby' },
  } do
    local attrs, first, target = case[1], case[2], case[3]
    it(('lands on the %s with %s when the %s comes first'):format(target, attrs, first), function()
      local ports = first == 'primary' and { primary, standby } or { standby, primary }
      local port, in_recovery = lands_on('tsa-' .. attrs, ports, attrs)
      assert.are.equal(target == 'primary' and primary or standby, port)
      assert.are.equal(target == 'standby', in_recovery)
    end)
  end

  it('falls back to the primary with prefer-standby when no standby answers', function()
    local stall = helpers.fault_proxy{ mode = 'stall' }
    local t0 = helpers.now()
    local port, in_recovery = lands_on('tsa-prefer-fallback', { stall:port(), primary }, 'prefer-standby')
    local took = helpers.now() - t0
    stall:stop()
    assert.are.equal(primary, port)
    assert.is_false(in_recovery)
    -- the silent host costs its 2 s in each of the two passes
    assert.is_true(took >= 3.9 and took < 6, ('landed after %.2f s'):format(took))
  end)

  it('fails read-write on the standby alone, saying why', function()
    local pool = hosts_pool('tsa-no-primary', { standby, 1 }, 'target_session_attrs=read-write')
    local conn, msg, code = pool:acquire{ timeout = 5 }
    assert.is_nil(conn)
    assert.are.equal('connect', code)
    assert.matches(('port %d: session is read-only'):format(standby), msg, 1, true)
    assert.matches('port 1: Connection refused', msg, 1, true)
  end)
end)
