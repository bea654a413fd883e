-- pgpool.metrics() passes the tool Prometheus users run on exposition
-- text: promtool check metrics (Debian's prometheus package); its
-- histograms count what was done; it renders the same from a snapshot
-- that went through JSON.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

local function has_promtool()
  local found = os.execute('command -v promtool >/dev/null 2>&1')
  return found == true or found == 0
end

-- promtool check metrics on text: 'rc=0\n' and nothing else when it passes.
local function promtool(text)
  local file = helpers.tmpname()
  helpers.write_file(file, text)
  local p = assert(io.popen('promtool check metrics < ' .. file .. ' 2>&1; echo "rc=$?"'))
  local out = p:read('*a')
  p:close()
  os.remove(file)
  return out
end

-- A pool of each kind of trouble, so that every family has series: waits,
-- a timeout, closes, failed connects of two classes, max_shared, a
-- replica.
local function troubled_pools()
  local a = pgpool.configure(opts('metrics-a', { max = 1, max_shared = 8,
    replicas = { helpers.dsn() } }))
  local held = assert(a:acquire())
  assert.is_nil(a:acquire{ timeout = 0.01 })
  held:discard()
  assert.truthy(a:query('select 1'))
  assert(a:acquire{ read_only = true }):release()
  -- (named apart: through PgBouncer its attempt may still be waiting on
  -- PgBouncer's login when the spec ends, and must not count as a pgpool
  -- backend in the next spec)
  local b = pgpool.configure{ name = 'metrics "b" \\ c', log_level = 'off', connect_timeout = 2,
    conninfo = helpers.dsn() .. ' dbname=no_such_db application_name=pgpool_no_db' }
  assert.is_nil(b:acquire{ timeout = 2 })
  local c = pgpool.configure{ name = 'metrics-refused', conninfo = 'host=127.0.0.1 port=1', log_level = 'off' }
  assert.is_nil(c:acquire{ timeout = 2 })
  return a, b, c
end

describe('metrics', function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('pass promtool check metrics on real output from several pools, every family present', function()
    if not has_promtool() then return pending('promtool not installed (make deps installs prometheus)') end
    local _, b = troubled_pools()
    local text = pgpool.metrics()
    assert.are.equal('rc=0\n', promtool(text))
    -- no such database: 3D from the server (PgBouncer may answer in its
    -- place, 08P01)
    local st = b:stats()
    local expected = next(st.connect_errors_by_class)
    assert.are.same({ [expected] = 1 }, st.connect_errors_by_class)
    assert.are.equal(helpers.via_pgbouncer() and expected or '3D', expected)
    assert.truthy(helpers.contains(text, ('pgpool_connect_errors_by_class_total{pool="metrics \\"b\\" \\\\ c",'
      .. 'pid="%d",class="%s"} 1\n'):format(st.pid, expected)), text)
    for _, family in ipairs{
      'pgpool_acquire_wait_seconds histogram', 'pgpool_query_duration_seconds histogram',
      'pgpool_connect_duration_seconds histogram', 'pgpool_connection_hold_seconds histogram',
      'pgpool_connections_closed_total counter', 'pgpool_connect_errors_by_class_total counter',
      'pgpool_acquire_rejected_total counter', 'pgpool_acquired_waited_total counter',
      'pgpool_retries_total counter', 'pgpool_connections_max_shared gauge',
      'pgpool_connections_shared_used gauge', 'pgpool_server_slots gauge', 'pgpool_health_status gauge',
      'pgpool_wait_seconds_max gauge',
    } do
      assert.truthy(helpers.contains(text, '# TYPE ' .. family .. '\n'), family)
    end
    local pid = require('pgpool.core').pid()
    for _, line in ipairs{
      'pgpool_connect_errors_by_class_total{pool="metrics-refused",pid="%d",class="connect"} 1',
      'pgpool_acquire_rejected_total{pool="metrics-a",pid="%d",reason="full"} 0',
      'pgpool_acquire_rejected_total{pool="metrics-refused",pid="%d",reason="connect"} 1',
      'pgpool_connections_closed_total{pool="metrics-a",pid="%d",reason="discarded"} 1',
      'pgpool_timeouts_total{pool="metrics-a",pid="%d"} 1',
      'pgpool_health_status{pool="metrics-refused",pid="%d"} 2',
      'pgpool_acquire_wait_seconds_bucket{pool="metrics-a",pid="%d",le="+Inf"} 2',
      'pgpool_acquire_wait_seconds_count{pool="metrics-a",pid="%d"} 2',
    } do
      assert.truthy(helpers.contains(text, line:format(pid) .. '\n'), line:format(pid) .. '\n' .. text)
    end
  end)

  it('renders the same text from a snapshot after a cjson round trip, and it passes promtool', function()
    local ok, cjson = pcall(require, 'cjson')
    if not ok then return pending('lua-cjson not installed') end
    troubled_pools()
    local snap = pgpool.snapshot{ history = true }
    local copy = cjson.decode(cjson.encode(snap))
    local text = pgpool.metrics({ snap })
    assert.are.equal(text, pgpool.metrics({ copy }))
    local other = cjson.decode(cjson.encode(snap))
    other.pid = snap.pid + 1
    local both = pgpool.metrics({ copy, other })
    if has_promtool() then assert.are.equal('rc=0\n', promtool(both)) end
  end)

  it('counts every acquire, statement, connect and checkout in its histogram', function()
    local pool = pgpool.configure(opts('metrics-hist', { max = 2 }))
    for _ = 1, 5 do assert.truthy(pool:query('select 1')) end
    assert.truthy(pool:exec('select 1'))
    local conn = assert(pool:acquire())
    for _ = 1, 3 do assert.truthy(conn:query('select 1')) end
    assert.is_nil(conn:query('select * from no_such_table'))
    conn:release()
    local st = pool:stats()
    local h = st.histograms
    assert.are.equal(7, st.acquired)
    assert.are.equal(7, h.acquire_wait.count)
    assert.are.equal(10, h.query.count)
    assert.are.equal(st.queries, h.query.count)
    assert.are.equal(st.created, h.connect.count)
    assert.are.equal(7, h.hold.count)
    for name, one in pairs(h) do
      assert.are.equal(16, #one.bounds, name)
      assert.are.equal(#one.bounds, #one.counts, name)
      for i = 2, #one.bounds do
        assert.is_true(one.bounds[i] > one.bounds[i - 1], name)
        assert.is_true(one.counts[i] >= one.counts[i - 1], name)
      end
      assert.is_true(one.counts[#one.counts] <= one.count, name)
      assert.is_true(one.sum >= 0, name)
    end
    assert.is_true(math.abs(h.query.sum - st.query_time_total) < 1e-9)
    assert.is_true(math.abs(h.acquire_wait.sum - st.wait_time_total) < 1e-9)
    assert.are.equal(7, st.window.acquire_wait.count)
  end)

  it('takes the longest wait of the last 60 s for pgpool_wait_seconds_max', function()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    local pool = pgpool.configure(opts('metrics-max', { max = 1 }))
    local held = assert(pool:acquire())
    local t = helpers.start_thread(function(path, cpath)
      package.path, package.cpath = path, cpath
      local p = assert(require('pgpool').pool('metrics-max'))
      assert(p:acquire{ timeout = 5 }):release()
    end)
    assert.is_true(helpers.wait_until(function() return pool:stats().waiting == 1 end, 3))
    helpers.sleep(0.2)
    held:release()
    t:join()
    local st = pool:stats()
    assert.is_true(st.wait_time_max_recent >= 0.2, st.wait_time_max_recent)
    assert.are.equal(st.wait_time_max, st.wait_time_max_recent)
    -- the first acquire waited for the pool's first connection, the
    -- second for its release
    assert.are.equal(2, st.acquired_waited)
    assert.truthy(helpers.contains(pgpool.metrics(),
      ('pgpool_wait_seconds_max{pool="metrics-max",pid="%d"} %s\n'):format(st.pid,
        require('pgpool.metrics').number(st.wait_time_max_recent))))
  end)

  it('names no gauge *_total', function()
    local pool = pgpool.configure(opts('metrics-names', { max = 3 }))
    assert.truthy(pool:query('select 1'))
    local text = pgpool.metrics()
    for name, kind in text:gmatch('# TYPE (%S+) (%S+)') do
      if kind ~= 'counter' then assert.is_nil(name:match('_total$'), name) end
    end
    assert.truthy(helpers.contains(text, ('pgpool_connections_open{pool="metrics-names",pid="%d"} 1\n'):format(require('pgpool.core').pid())), text)
  end)

  it('labels each process by pid when given several snapshots', function()
    local pool = pgpool.configure(opts('metrics-pids', { max = 3 }))
    assert.truthy(pool:query('select 1'))
    local mine = pgpool.snapshot()
    local other = pgpool.snapshot()
    other.pid = mine.pid + 1
    local text = pgpool.metrics({ mine, other })
    for _, pid in ipairs{ mine.pid, other.pid } do
      assert.truthy(helpers.contains(text,
        ('pgpool_queries_total{pool="metrics-pids",pid="%d"} 1\n'):format(pid)), text)
    end
    local _, families = text:gsub('# TYPE pgpool_queries_total counter', '')
    assert.are.equal(1, families)
  end)
end)
