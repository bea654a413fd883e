-- statement_cache behind PgBouncer in transaction mode: server connections
-- are shared, so a prepared statement's name must identify its SQL. Several
-- pgpool connections each run their own statement (and one they share)
-- many times, while another pins one of the two server connections in a
-- transaction now and then: every result is the caller's own, and no
-- 42P05 / 26000 reaches the caller.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local function pgbouncer_bin()
  for _, path in ipairs{ '/usr/sbin/pgbouncer', '/usr/bin/pgbouncer' } do
    local f = io.open(path)
    if f then f:close() return path end
  end
end

local function free_port()
  local rc, out = helpers.run("bash -c 'die() { exit 1; }; . spec/support/ports.sh; pick_port'")
  assert(rc == 0, out)
  return assert(tonumber(out))
end

local bouncer = {}

-- Start PgBouncer (as postgres) in front of the test server: transaction
-- pooling, two server connections, trust.
local function start_pgbouncer(bin)
  local dir = helpers.tmpname()
  assert(os.execute('mkdir -p ' .. dir))
  bouncer.dir, bouncer.port = dir, free_port()
  local function write(name, text)
    local f = assert(io.open(dir .. '/' .. name, 'w'))
    f:write(text)
    f:close()
  end
  write('users.txt', '"postgres" ""\n')
  write('pgbouncer.ini', table.concat({
    '[databases]',
    ('pgpool_test = host=%s port=%s dbname=pgpool_test user=postgres')
      :format(os.getenv('PGPOOL_TEST_SOCKDIR'), os.getenv('PGPOOL_TEST_PORT')),
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    'listen_port = ' .. bouncer.port,
    'unix_socket_dir =',
    'auth_type = trust',
    'auth_file = ' .. dir .. '/users.txt',
    'pool_mode = transaction',
    'default_pool_size = 2',
    'max_client_conn = 50',
    'server_round_robin = 1',
    'logfile = ' .. dir .. '/pgbouncer.log',
    'pidfile = ' .. dir .. '/pgbouncer.pid',
    '',
  }, '\n'))
  assert(os.execute('chown -R postgres: ' .. dir))
  local rc, out = helpers.run('runuser -u postgres -- ' .. bin .. ' -d ' .. dir .. '/pgbouncer.ini')
  assert(rc == 0, 'pgbouncer did not start: ' .. out)
  bouncer.conninfo = ('host=127.0.0.1 port=%d dbname=pgpool_test user=postgres'):format(bouncer.port)
  assert(helpers.wait_until(function()
    return helpers.run(('psql "%s" -XAtqc "select 1"'):format(bouncer.conninfo)) == 0
  end, 10), 'pgbouncer does not answer')
end

local function stop_pgbouncer()
  if not bouncer.dir then return end
  local pid = helpers.read_file(bouncer.dir .. '/pgbouncer.pid'):match('%d+')
  if pid then
    os.execute('kill ' .. pid)
    helpers.wait_until(function() return helpers.run('kill -0 ' .. pid) ~= 0 end, 5)
  end
  os.execute('rm -rf ' .. bouncer.dir)
  bouncer = {}
end

describe('statement_cache behind PgBouncer in transaction mode', function()
  local bin = pgbouncer_bin()
  if not bin then
    pending('pgbouncer is not installed (Debian package pgbouncer)')
    return
  end

  setup(function() start_pgbouncer(bin) end)
  teardown(function()
    pgpool.shutdown_all{ timeout = 1 }
    stop_pgbouncer()
  end)

  it('gives every connection the results of its own statements', function()
    local N, ROUNDS = 5, 60
    local pool = pgpool.configure{ name = 'bounced', conninfo = bouncer.conninfo, max = N + 1,
      statement_cache = 10, log_level = 'warn' }
    local conns = {}
    for i = 1, N + 1 do conns[i] = assert(pool:acquire()) end
    local pinner = table.remove(conns)
    local wrong, errors, runs = 0, {}, 0
    for round = 1, ROUNDS do
      local pinned = round % 3 == 0
      if pinned then assert(pinner:exec('begin; select 1')) end
      for i = 1, N do
        for _ = 1, 3 do
          local v = round * 100 + i
          local res, msg, code = conns[i]:query("select $1::int as v, 'T" .. i .. "' as who", v)
          runs = runs + 1
          if not res then
            errors[#errors + 1] = tostring(code) .. ': ' .. tostring(msg)
          elseif res[1].who ~= 'T' .. i or res[1].v ~= v then
            wrong = wrong + 1
          end
          res, msg, code = conns[i]:query('select $1::int * 2 as double', v)
          if not res then
            errors[#errors + 1] = tostring(code) .. ': ' .. tostring(msg)
          elseif res[1].double ~= 2 * v then
            wrong = wrong + 1
          end
        end
      end
      if pinned then assert(pinner:exec('commit')) end
    end
    pinner:release()
    for i = 1, N do conns[i]:release() end
    assert.are.equal(0, wrong, wrong .. ' of ' .. runs .. ' results came from another statement')
    assert.are.same({}, errors)
  end)

  it('runs transactions with statement_cache when the pool says transaction_pooling', function()
    local N, ROUNDS = 4, 25
    local pool = pgpool.configure{ name = 'bounced-txn', conninfo = bouncer.conninfo, max = N,
      statement_cache = 10, transaction_pooling = true, log_level = 'warn' }
    local conns = {}
    for i = 1, N do conns[i] = assert(pool:acquire()) end
    local errors, runs = {}, 0
    for round = 1, ROUNDS do
      -- a statement new each round: client 1 prepares it outside a block
      -- (by name, on one of PgBouncer's server connections); the others
      -- want it inside a block, on whichever server connection is lent,
      -- where the name may be taken already (42P05) or, for client 1's
      -- cache, unknown (26000)
      local sql = ('select $1::int + %d as v'):format(round)
      local res, msg, code = conns[1]:query(sql, round)
      if not res then errors[#errors + 1] = tostring(code) .. ': ' .. tostring(msg) end
      for i = 1, N do
        assert(conns[i]:exec('begin'))
        for _ = 1, 2 do
          runs = runs + 1
          res, msg, code = conns[i]:query(sql, round)
          if not res then
            errors[#errors + 1] = tostring(code) .. ': ' .. tostring(msg)
          elseif res[1].v ~= 2 * round then
            errors[#errors + 1] = 'wrong result'
          end
        end
        assert(conns[i]:exec('commit'))
      end
    end
    for i = 1, N do conns[i]:release() end
    assert.are.same({}, errors, runs .. ' statements')
  end)
end)
