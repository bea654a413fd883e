-- The specs' fault proxy (spec/support/fault_proxy.lua, driven through
-- helpers.fault_proxy): each mode does what it says, seen first by plain TCP
-- clients in front of an echo server, then by pgpool in front of the test
-- server. The TCP checks run luv's loop in the busted process: run them
-- through make test (spec/support/run-specs.sh loads luv before busted, and
-- says why).
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local uv = require 'luv'
local listen = require 'spec.support.listen'

local runtime = helpers.runtime()

-- The 16-byte CancelRequest: length 16, code 80877102, a backend pid and key.
local CANCEL_REQUEST = '\0\0\0\16' .. '\4\210\22\46' .. '\0\0\48\57' .. '\0\0\0\1'

-- Run the luv loop until done() holds or `timeout` s pass; returns done().
local function run_until(done, timeout)
  local expired = false
  local timer = uv.new_timer()
  timer:start(math.floor(timeout * 1000), 0, function() expired = true end)
  while not done() and not expired do uv.run('once') end
  timer:close()
  uv.run('nowait')
  return done() and true or false
end

-- Let the loop run for `seconds` (whatever should not happen has its chance).
local function run_for(seconds)
  run_until(function() return false end, seconds)
end

-- An echo server on this process's loop: what it saw, per connection.
local function echo_server()
  local echo = { connections = {} }
  echo.handle, echo.port = listen(function(err)
    if err then return end
    local client = uv.new_tcp()
    echo.handle:accept(client)
    local seen = { received = '' }
    echo.connections[#echo.connections + 1] = seen
    client:read_start(function(rerr, data)
      if rerr then
        seen.err = rerr
        client:close()
      elseif data then
        seen.received = seen.received .. data
        client:write(data)
      else
        seen.eof = true
        client:close()
      end
    end)
  end)
  function echo.close()
    echo.handle:close()
    uv.run('nowait')
  end
  return echo
end

-- A plain TCP client: what it received, and how its connection ended.
local function tcp_client(port)
  local c = { received = '', tcp = uv.new_tcp() }
  c.tcp:connect('127.0.0.1', port, function(err)
    if err then c.err = err return end
    c.connected = true
    c.tcp:read_start(function(rerr, data)
      if rerr then c.err = rerr
      elseif data then c.received = c.received .. data
      else c.eof = true end
    end)
  end)
  assert(run_until(function() return c.connected or c.err end, 2), 'connect timed out')
  function c.send(data) c.tcp:write(data) end
  function c.ended() return c.eof or c.err ~= nil end
  function c.close()
    if not c.tcp:is_closing() then c.tcp:close() end
    uv.run('nowait')
  end
  return c
end

-- Send data and wait (up to `timeout` s) for it to come back.
local function round_trip(client, data, timeout)
  local before = #client.received
  client.send(data)
  return run_until(function() return #client.received >= before + #data end, timeout or 2)
end

describe('the fault proxy', function()
  if runtime ~= 'lua5.4' then
    pending('plain TCP checks of the proxy (a lua5.4 process itself): run once, under lua5.4')
    return
  end

  local echo, proxy, clients

  before_each(function()
    echo = echo_server()
    proxy = helpers.fault_proxy{ target_port = echo.port }
    clients = {}
  end)

  after_each(function()
    for _, c in ipairs(clients) do c.close() end
    proxy:stop()
    echo.close()
  end)

  local function client()
    local c = tcp_client(proxy:port())
    clients[#clients + 1] = c
    return c
  end

  it('passes bytes both ways in pass mode, and counts them', function()
    local c = client()
    assert.is_true(round_trip(c, 'hello'))
    assert.are.equal('hello', c.received)
    assert.are.equal('hello', echo.connections[1].received)
    local st = proxy:stats()
    assert.are.same({ accepted = 1, open = 1, upstream = 1, cancels = 0, to_server = 5, to_client = 5 }, st)
  end)

  it('holds each chunk for the delay in each direction', function()
    proxy:set('delay', 150)
    local c = client()
    local t0 = helpers.now()
    assert.is_true(round_trip(c, 'slow'))
    local took = helpers.now() - t0
    assert.is_true(took >= 0.29 and took < 1, ('round trip took %.3f s'):format(took))
    proxy:set('pass')
    t0 = helpers.now()
    assert.is_true(round_trip(c, 'fast'))
    assert.is_true(helpers.now() - t0 < 0.25, 'pass mode still delays')
  end)

  it('forwards nothing during a stall, new connections included, then delivers what it held', function()
    local open = client()
    assert.is_true(round_trip(open, 'a'))
    proxy:set('stall')
    local fresh = client()                    -- accepted, but goes nowhere
    open.send('b')
    fresh.send('c')
    run_for(0.3)
    assert.are.equal('a', open.received)
    assert.are.equal('', fresh.received)
    assert.are.equal(1, #echo.connections)
    assert.are.equal('a', echo.connections[1].received)
    assert.is_falsy(open.ended() or fresh.ended())
    assert.are.equal(2, proxy:stats().accepted)
    assert.are.equal(1, proxy:stats().upstream)
    proxy:set('pass')
    assert.is_true(run_until(function() return open.received == 'ab' and fresh.received == 'c' end, 2))
    assert.are.equal(2, proxy:stats().upstream)
  end)

  -- How one side's connection ended: 'fin', 'rst' (ECONNRESET), another
  -- error, or nil while it is open.
  local function ending(side)
    if side.err then return side.err:match('ECONNRESET') and 'rst' or side.err end
    return side.eof and 'fin' or nil
  end

  for _, case in ipairs{ { mode = 'drop', ends = 'fin' }, { mode = 'reset', ends = 'rst' } } do
    it(('ends both sides of every connection, open or new, with a %s in %s mode'):format(case.ends:upper(), case.mode),
      function()
        local c = client()
        assert.is_true(round_trip(c, 'x'))
        proxy:set(case.mode)
        local server_side = echo.connections[1]
        assert.is_true(run_until(function() return ending(c) and ending(server_side) end, 2))
        assert.are.equal(case.ends, ending(c))
        assert.are.equal(case.ends, ending(server_side))
        local fresh = client()
        assert.is_true(run_until(fresh.ended, 2))
        assert.are.equal(case.ends, ending(fresh))
        assert.are.equal(1, #echo.connections)
        assert.are.equal(0, proxy:stats().open)
      end)
  end

  it('closes new connections at once in accept_close mode and leaves open ones alone', function()
    local open = client()
    assert.is_true(round_trip(open, 'x'))
    proxy:set('accept_close')
    local fresh = client()
    assert.is_true(run_until(fresh.ended, 2))
    assert.is_true(fresh.eof)
    assert.is_true(round_trip(open, 'y'))
    assert.are.equal(1, #echo.connections)
    assert.are.equal(1, proxy:stats().upstream)
  end)

  it('leaves a cancel request unanswered in ignore_cancel mode and forwards the rest', function()
    proxy:set('ignore_cancel')
    local cancel = client()
    cancel.send(CANCEL_REQUEST)
    local other = client()
    assert.is_true(round_trip(other, ('z'):rep(16)))
    run_for(0.3)
    assert.are.equal('', cancel.received)
    assert.is_falsy(cancel.ended())
    assert.are.equal(1, proxy:stats().cancels)
    for _, seen in ipairs(echo.connections) do
      assert.is_nil(seen.received:find(CANCEL_REQUEST, 1, true))
    end
  end)

  it('forwards a cancel request in pass mode', function()
    local cancel = client()
    assert.is_true(round_trip(cancel, CANCEL_REQUEST))
    assert.are.equal(0, proxy:stats().cancels)
  end)

  it('rejects an unknown mode and a delay without a number of ms', function()
    assert.has_error(function() proxy:set('melt') end, 'fault_proxy: unknown mode melt')
    assert.has_error(function() proxy:set('delay') end, 'fault_proxy: delay needs a number of ms')
  end)
end)

describe('the fault proxy process', function()
  if runtime ~= 'lua5.4' then
    pending('checks the proxy process itself: run once, under lua5.4')
    return
  end

  local alive = helpers.process_alive

  it('exits, removing its directory, when the process that started it ends', function()
    local out, err, rc = helpers.run_lua([[
      local helpers = require 'spec.support.helpers'
      local proxy = helpers.fault_proxy{ target_port = 1 }
      print(proxy.pid .. ' ' .. proxy.dir)
    ]])
    assert.are.equal(0, rc, err)
    local pid, dir = out:match('^(%d+) (%S+)\n$')
    assert.truthy(pid, out)
    assert.is_true(helpers.wait_until(function() return not alive(pid) end, 3))
    assert.are_not.equal(0, (helpers.run('test -e ' .. helpers.shquote(dir))), dir .. ' is left')
  end)

  it('exits after its lifetime', function()
    local proxy = helpers.fault_proxy{ target_port = 1, lifetime = 0.5 }
    assert.is_true(alive(proxy.pid))
    assert.is_true(helpers.wait_until(function() return not alive(proxy.pid) end, 3))
    proxy:stop()
  end)

  it('exits on stop', function()
    local proxy = helpers.fault_proxy{ target_port = 1 }
    proxy:stop()
    assert.is_false(alive(proxy.pid))
  end)
end)

-- pgpool in front of the test server, through the proxy -------------------------------

describe('pgpool through the fault proxy', function()
  local proxy

  before_each(function()
    proxy = helpers.fault_proxy{}               -- in front of the test server
  end)

  after_each(function()
    proxy:set('pass')
    pgpool.shutdown_all{ timeout = 1 }
    proxy:stop()
  end)

  -- A pool on the proxy; its backends carry their own application_name so
  -- that one that outlives its spec is not counted as a 'pgpool' backend.
  local function proxied_pool(name, extra)
    local o = helpers.pool_options(name, extra)
    o.conninfo = proxy:conninfo() .. ' application_name=fault_proxy_spec'
    return pgpool.configure(o)
  end

  it('queries through pass mode', function()
    local pool = proxied_pool('proxy-pass')
    local res = assert(pool:query('select 40 + 2 as answer'))
    assert.are.equal(42, res[1].answer)
    assert.are.equal(1, proxy:stats().upstream)
  end)

  it('adds two delays to a round trip in delay mode', function()
    local pool = proxied_pool('proxy-delay')
    local conn = assert(pool:acquire())
    proxy:set('delay', 100)
    local t0 = helpers.now()
    assert(conn:query('select 1'))
    local took = helpers.now() - t0
    conn:release()
    assert.is_true(took >= 0.19 and took < 1, ('the query took %.3f s'):format(took))
  end)

  for _, mode in ipairs{ 'drop', 'reset' } do
    it('fails a query on a connection cut by ' .. mode .. ' with nil, msg, code, then replaces it', function()
      local pool = proxied_pool('proxy-' .. mode, { max = 1 })
      local conn = assert(pool:acquire())
      local pid = conn:backend_pid()
      proxy:set(mode)
      local res, msg, code = conn:query('select 1')
      assert.is_nil(res)
      assert.is_string(msg)
      assert.are.equal('closed', code, msg)
      conn:release()
      proxy:set('pass')
      conn = assert(pool:acquire{ timeout = 2 })
      assert.are_not.equal(pid, conn:backend_pid())
      assert.truthy(conn:query('select 1'))
      conn:release()
    end)
  end

  it('fails an acquire fast with code "connect" when the proxy closes every new connection', function()
    proxy:set('accept_close')
    local pool = proxied_pool('proxy-accept-close', { connect_timeout = 2 })
    local t0 = helpers.now()
    local conn, msg, code = pool:acquire{ timeout = 3 }
    assert.is_nil(conn)
    assert.are.equal('connect', code, msg)
    assert.is_true(helpers.now() - t0 < 1, 'a closed connection must fail fast')
  end)

  it('ends an acquire on a frozen network by connect_timeout', function()
    proxy:set('stall')
    local pool = proxied_pool('proxy-stall-connect', { connect_timeout = 1 })
    local t0 = helpers.now()
    local conn, msg, code = pool:acquire{ timeout = 3 }
    local took = helpers.now() - t0
    assert.is_nil(conn)
    assert.are.equal('connect', code, msg)
    assert.is_true(took >= 0.9 and took < 2.5, ('gave up after %.3f s'):format(took))
  end)

  -- query_timeout = 0.5 ends `sql` with code "timeout" in bounded time once
  -- the proxy is in `mode`, though the cancel pgpool sends is never answered.
  -- Returns the pool.
  local function times_out_under(mode, sql)
    local pool = proxied_pool('proxy-' .. mode .. '-query', { max = 1, query_timeout = 0.5, log_level = 'off' })
    local conn = assert(pool:acquire())
    proxy:set(mode)
    local t0 = helpers.now()
    local res, _, code = conn:query(sql)
    local took = helpers.now() - t0
    assert.is_nil(res)
    assert.are.equal('timeout', code)
    assert.is_true(took < 10, ('gave up after %.3f s'):format(took))
    conn:release()                             -- still busy: closed, not reused
    return pool
  end

  it('ends a query on a frozen network within query_timeout and the cancel grace', function()
    local pool = times_out_under('stall', 'select 1')
    assert.are.equal(0, pool:stats().total)
  end)

  it('ends a slow query within query_timeout and the cancel grace when its cancel goes unanswered', function()
    times_out_under('ignore_cancel', 'select pg_sleep(30)')
    assert.are.equal(1, proxy:stats().cancels)
  end)
end)
