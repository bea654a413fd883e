-- The OpenResty example (examples/openresty) against the throwaway server:
-- nginx + lua-nginx-module with pgpool configured in init_by_lua.
--
-- nginx always loads the LuaJIT build of pgpool, whatever runtime busted runs
-- on, so these checks run once, under lua5.4, and are pending under the other
-- runtimes.
local helpers = require 'spec.support.helpers'
package.path = 'examples/openresty/?.lua;' .. package.path
local harness = require 'harness'
local cjson = require 'cjson.safe'

local RUN_UNDER = 'lua5.4'
local runtime = os.getenv('PGPOOL_TEST_RUNTIME') or RUN_UNDER



if runtime ~= RUN_UNDER then
  describe('OpenResty example', function()
    pending('runs under ' .. RUN_UNDER .. ' only (nginx uses the LuaJIT build either way)')
  end)
  return
end

describe('OpenResty example', function()
  local available, missing = harness.available()

  it('has nginx, lua-nginx-module, ab and curl (make deps-test installs them)', function()
    assert(available, 'missing: ' .. tostring(missing))
  end)
  if not available then return end

  describe('with 2 workers, max 10 per worker, over the Unix socket', function()
    local WORKERS, MAX = 2, 10
    local srv, log_start

    setup(function()
      log_start = #helpers.server_log()        -- other specs share the server log
      srv = harness.start{ url = helpers.dsn(), workers = WORKERS, max = MAX, threads = 16 }
    end)

    teardown(function()
      if srv then srv:stop() end
      helpers.wait_until(function() return helpers.backends_or_nil('pgpool') == 0 end, 10)
    end)

    it('opens no connection before the first request (init_by_lua only configures)', function()
      assert.are.equal(0, helpers.backends_or_nil('pgpool'))
    end)

    it('answers /ping without the database', function()
      local status, body = srv:get('/ping')
      assert.are.equal(200, status)
      assert.is_true(helpers.decode_json(body).pong)
    end)

    it('reports the pool on /health after select 1', function()
      local status, body = srv:get('/health')
      assert.are.equal(200, status, body)
      local database = helpers.decode_json(body).database
      assert.is_true(database.connected, body)
      for _, name in ipairs{ 'total', 'idle', 'waiting', 'utilization' } do
        assert.is_number(database.pool[name], name .. ' in ' .. body)
      end
      assert.is_true(database.pool.total >= 1)
      assert.are.equal(MAX, database.pool.max)
    end)

    it('runs a parameterised query directly on /query', function()
      local status, body = srv:get('/query?id=42')
      assert.are.equal(200, status, body)
      local answer = helpers.decode_json(body)
      assert.are.equal('direct', answer.via)
      assert.are.equal(42, answer.rows[1].id)
      assert.are.equal(cjson.null, answer.rows[1].note)
    end)

    it('runs it through ngx.run_worker_thread on /thread, SQL NULL included', function()
      local status, body = srv:get('/thread?id=43')
      assert.are.equal(200, status, body)
      local answer = helpers.decode_json(body)
      assert.are.equal('thread', answer.via)
      assert.are.equal(43, answer.rows[1].id)
      -- pgpool.null (a NULL light userdata) crosses the thread boundary intact:
      -- cjson writes null for its cjson.null, the same NULL light userdata.
      assert.are.equal(cjson.null, answer.rows[1].note)
    end)

    it('gives each worker the pool configured in the master, and /stats sums them', function()
      local status, body = srv:get('/stats')
      assert.are.equal(200, status, body)
      local answer = helpers.decode_json(body)
      assert.are.equal(WORKERS, #answer.workers, body)
      assert.are.equal(WORKERS * MAX, answer.sum.max)
    end)

    local function load(path)
      local monitor = harness.monitor(helpers.dsn())
      local ok, r = pcall(srv.ab, srv, path, 1000, 50, monitor.count, 0.01)
      monitor.close()
      assert(ok, r)
      assert.are.equal(1000, r.complete, r.output)
      assert.are.equal(0, r.failed, r.output)
      assert.are.equal(0, r.non_2xx, r.output)
      assert.is_true(r.samples >= 3, 'sampled pg_stat_activity ' .. r.samples .. ' times')
      assert.is_true(r.peak <= WORKERS * MAX,
        ('peak %d pgpool backends > %d workers x max %d'):format(r.peak, WORKERS, MAX))
      return r
    end

    it('serves ab -n 1000 -c 50 on /health: 0 failed, at most workers x max backends', function()
      load('/health')
    end)

    it('serves ab -n 1000 -c 50 on /thread: 0 failed, at most workers x max backends', function()
      local r = load('/thread?id=1')
      -- 16 threads per worker against max 10: the cap is what held
      assert.is_true(r.peak >= 2, 'peak ' .. r.peak)
    end)

    it('logged no "too many clients" and no Lua error', function()
      local log = srv:error_log()
      assert.is_nil(log:find('too many clients', 1, true), log)
      assert.is_nil(log:find('[error]', 1, true), log)
      assert.is_nil(log:find('[alert]', 1, true), log)
    end)

    it('closes every connection on a graceful stop (exit_worker_by_lua)', function()
      assert.is_true(helpers.backends_or_nil('pgpool') > 0)
      srv:stop()
      assert.is_true(helpers.wait_until(function() return helpers.backends_or_nil('pgpool') == 0 end, 5))
      local log = helpers.server_log():sub(log_start + 1)
      assert.is_nil(log:find('unexpected EOF', 1, true), log)
    end)
  end)

  describe('with 1 worker', function()
    local srv

    setup(function()
      srv = harness.start{ url = helpers.dsn(), workers = 1, max = 4, threads = 4 }
    end)

    teardown(function()
      if srv then srv:stop() end
      helpers.wait_until(function() return helpers.backends_or_nil('pgpool') == 0 end, 10)
    end)

    it('runs thread VMs on the pool the master configured, not a second one', function()
      local function backend(path)
        local _, body = srv:get(path)
        return helpers.decode_json(body).rows[1].backend
      end
      local direct = backend('/query?id=1')
      assert.is_number(direct)
      -- one idle connection, reused by the main VM and the thread's VM alike
      assert.are.equal(direct, backend('/thread?id=2'))
      assert.are.equal(direct, backend('/query?id=3'))
      local _, stats = srv:get('/stats')
      local sum = helpers.decode_json(stats).sum
      assert.are.equal(1, sum.created, stats)
      assert.are.equal(3, sum.acquired, stats)
      assert.are.equal(4, sum.max, stats)
    end)

    it('answers /ping within 0.2 s while /sleep?s=0.5 runs in a worker thread', function()
      local sleeping = srv:get_async('/sleep?s=0.5')
      assert.is_true(helpers.wait_until(function()
        return helpers.psql("select count(*) from pg_stat_activity where state = 'active' and query like 'select pg_sleep%'") == '1'
      end, 3), '/sleep never reached the server')
      local status, body, seconds = srv:get('/ping')
      assert.are.equal(200, status, body)
      assert.is_true(seconds < 0.2, ('/ping took %.3f s'):format(seconds))
      local sleep_status, sleep_body, sleep_seconds = sleeping:wait()
      assert.are.equal(200, sleep_status, sleep_body)
      assert.is_true(sleep_seconds >= 0.5, ('/sleep took %.3f s'):format(sleep_seconds))
    end)

    it('long-polls /listen in a worker thread: a NOTIFY reaches it, a quiet channel times out', function()
      local polling = srv:get_async('/listen?channel=nginx_jobs&timeout=10')
      assert.is_true(helpers.wait_until(function()
        return helpers.psql("select count(*) from pg_stat_activity where query like 'LISTEN %nginx_jobs%'") == '1'
      end, 5), '/listen never listened')
      helpers.psql("notify nginx_jobs, 'hello'")
      local status, body = polling:wait()
      assert.are.equal(200, status, body)
      local answer = helpers.decode_json(body)
      assert.are.equal('nginx_jobs', answer.channel)
      assert.are.equal('hello', answer.payload)
      status, body = srv:get('/listen?channel=quiet&timeout=0.3')
      assert.are.equal(200, status, body)
      assert.is_true(helpers.decode_json(body).timeout, body)
    end)

    it('stalls /ping while a direct call (no thread) runs a slow query: the documented caveat', function()
      local sleeping = srv:get_async('/sleep?s=0.5&direct=1')
      assert.is_true(helpers.wait_until(function()
        return helpers.psql("select count(*) from pg_stat_activity where state = 'active' and query like 'select pg_sleep%'") == '1'
      end, 3), '/sleep never reached the server')
      local status, _, seconds = srv:get('/ping')
      assert.are.equal(200, status)
      assert.is_true(seconds >= 0.25, ('/ping took %.3f s'):format(seconds))
      assert.are.equal(200, (sleeping:wait()))
    end)
  end)

  describe('the naive endpoint (a new connection per request, never closed)', function()
    local srv, monitor

    setup(function()
      -- taken first: the server will have no slot left for psql
      monitor = harness.monitor(helpers.dsn())
      srv = harness.start{ url = helpers.dsn(), workers = 1 }
    end)

    teardown(function()
      if srv then srv:stop() end
      if monitor then monitor.close() end
      helpers.wait_until(function() return helpers.backends_or_nil('pgpool') == 0 end, 10)
    end)

    it('fails with the server\'s "too many clients already" once max_connections is used up', function()
      local limit = tonumber(helpers.psql('show max_connections'))
      local status, body
      local ok = 0
      for _ = 1, limit + 5 do
        status, body = srv:get('/naive?id=1')
        if status ~= 200 then break end
        ok = ok + 1
      end
      assert.are.equal(500, status, body)
      assert.matches('too many clients already', helpers.decode_json(body).error)
      assert.is_true(ok >= 10 and ok < limit, ok .. ' naive requests succeeded')
      assert.are.equal(ok, monitor.count())
      assert.is_true(srv:count_in_log('too many clients already') >= 1)
    end)
  end)
end)
