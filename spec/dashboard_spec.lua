-- The dashboard (lua/pgpool/dashboard.lua) and the OpenResty adapter that
-- serves it (lua/pgpool/nginx.lua), on the example app: real nginx with 2
-- workers under ab, the page opened in headless Chromium (its DOM read back
-- and a screenshot saved to build/test-output/dashboard.png),
-- /pgpool/metrics through promtool, and /pgpool/health turning 503 when the
-- server is cut off (the fault proxy resets every connection) and 200 again
-- when it is back.
--
-- nginx always loads the LuaJIT build of pgpool, so this runs once, under
-- lua5.4 (see spec/openresty_spec.lua).
local helpers = require 'spec.support.helpers'
package.path = 'examples/openresty/?.lua;' .. package.path
local harness = require 'harness'
local cjson = require 'cjson.safe'

local RUN_UNDER = 'lua5.4'
local runtime = os.getenv('PGPOOL_TEST_RUNTIME') or RUN_UNDER

if runtime ~= RUN_UNDER then
  describe('the dashboard on OpenResty', function()
    pending('runs under ' .. RUN_UNDER .. ' only (nginx uses the LuaJIT build either way)')
  end)
  return
end

local OUTPUT_DIR = 'build/test-output'
local SCREENSHOT = OUTPUT_DIR .. '/dashboard.png'
local shquote = helpers.shquote



local function set_size(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

-- The shell command running headless Chromium on url with `args`, in a
-- profile of its own under the temporary directory `home`; its stderr goes
-- to home/stderr. Virtual time lets the page poll its data a few times, at
-- once; `timeout` bounds the real time.
local function chromium_command(home, url, args)
  return ('HOME=%s timeout 90 chromium --headless --no-sandbox --disable-gpu --no-first-run'
    .. ' --disable-extensions --user-data-dir=%s/profile --virtual-time-budget=4000 %s %s 2>%s/stderr')
    :format(shquote(home), shquote(home), args, shquote(url), shquote(home))
end

local function temporary_home()
  return helpers.must_run('mktemp -d "${TMPDIR:-/tmp}/pgpool-chromium.XXXXXX"')
end

-- Run Chromium (see chromium_command); its stdout (the DOM with --dump-dom).
local function chromium(url, args)
  local home = temporary_home()
  local p = assert(io.popen(chromium_command(home, url, args) .. '; echo "rc=$?"'))
  local out = p:read('*a')
  p:close()
  local stderr = helpers.read_file(home .. '/stderr')
  os.execute('rm -rf ' .. shquote(home))
  local body, rc = out:match('^(.*)rc=(%d+)\n$')
  assert(rc == '0', ('chromium exited with %s:\n%s'):format(tostring(rc), stderr))
  return body
end

-- A plain Lua process serving its own dashboard: a luv HTTP server in this
-- process answers path -> routes[path]() (content type, body) while
-- Chromium, started beside it, dumps the page's DOM. Returns that DOM.
local function dump_dom_served_by_this_process(routes)
  local uv = require 'luv'
  local server, port
  server, port = require('spec.support.listen')(function()
    local client = uv.new_tcp()
    server:accept(client)
    local request = ''
    client:read_start(function(err, chunk)
      if err or not chunk then return client:close() end
      request = request .. chunk
      if not request:find('\r\n\r\n', 1, true) then return end
      client:read_stop()
      local route = routes[request:match('^GET (%S+)') or '']
      local status, content_type, body = '404 Not Found', 'text/plain', 'not found'
      if route then status, content_type, body = '200 OK', route() end
      client:write(('HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s')
        :format(status, content_type, #body, body), function() client:close() end)
    end)
  end)
  local home = temporary_home()
  local url = ('http://127.0.0.1:%d/pgpool/'):format(port)
  local cmd = chromium_command(home, url, '--dump-dom') .. ' >' .. shquote(home .. '/dom')
  local exit_code
  local child = uv.spawn('sh', { args = { '-c', cmd } }, function(code)
    exit_code = code
    server:close()
  end)
  assert(child, 'could not start chromium')
  uv.run('default')                         -- until Chromium exits (timeout 90) and the server closes
  local dom, stderr = helpers.read_file(home .. '/dom'), helpers.read_file(home .. '/stderr')
  os.execute('rm -rf ' .. shquote(home))
  assert(exit_code == 0, ('chromium exited with %s:\n%s'):format(tostring(exit_code), stderr))
  return dom
end

-- Every counter series of an exposition, as { ["name{labels}"] = value }, and
-- the set of pids its series are labelled with.
local function counters_of(text)
  local kinds, values, pids = {}, {}, {}
  for name, kind in text:gmatch('# TYPE (%S+) (%S+)') do kinds[name] = kind end
  for series, name, labels, value in text:gmatch('\n((pgpool_[%w_]+)(%b{})) (%S+)') do
    if kinds[name] == 'counter' then values[series] = tonumber(value) end
    local pid = labels:match('pid="(%d+)"')
    if pid then pids[tonumber(pid)] = true end
  end
  return values, pids
end

local function promtool(text)
  local file = helpers.tmpname()
  helpers.write_file(file, text)
  local rc, out = helpers.run('promtool check metrics < ' .. shquote(file))
  os.remove(file)
  return rc, out
end

-- What the page drew: the dumped DOM up to the page's script, which
-- quotes its own markup.
local function drawn(dom)
  return dom:match('^(.-)<script') or dom
end

-- The pool cards of a dumped DOM: { pid, pool, status, samples, peak_in_use,
-- points (of the in-use area), figures = { field = number } }.
local function cards_of(dom)
  dom = drawn(dom)
  local cards = {}
  for attrs, inner in dom:gmatch('<article([^>]*)>(.-)</article>') do
    local card = {
      pid = tonumber(attrs:match('data%-pid="(%d+)"')),
      pool = attrs:match('data%-pool="([^"]*)"'),
      status = attrs:match('data%-status="([^"]*)"'),
      samples = tonumber(inner:match('data%-samples="(%d+)"')),
      peak_in_use = tonumber(inner:match('data%-peak%-in%-use="(%d+)"')),
      figures = {},
    }
    local area = inner:match('<path class="in%-use" d="([^"]*)"') or ''
    card.points = select(2, area:gsub('[ML]', ''))
    for field, value in inner:gmatch('data%-field="([%w_.]+)" data%-value="([^"]*)"') do
      card.figures[field] = tonumber(value)
    end
    cards[#cards + 1] = card
  end
  return cards
end

describe('the dashboard on OpenResty', function()
  local available, missing = harness.available()

  it('has nginx, lua-nginx-module, ab, curl, chromium and promtool (make deps-test installs them)', function()
    assert(available, 'missing: ' .. tostring(missing))
    assert.are.equal(0, (helpers.run('command -v chromium')), 'chromium missing')
    assert.are.equal(0, (helpers.run('command -v promtool')), 'promtool missing')
  end)
  if not available then return end

  describe('with 2 workers, max 4 each, after 10 s of load', function()
    local WORKERS, MAX, CLIENTS = 2, 4, 12
    local srv, load, scrapes, pids, screenshot

    -- The screenshot, taken under load (the spec below checks it).
    local function take_screenshot()
      helpers.must_run('mkdir -p ' .. OUTPUT_DIR)
      os.remove(SCREENSHOT)
      local ok, err = pcall(chromium, srv.url .. '/pgpool/',
        '--window-size=1280,900 --hide-scrollbars --screenshot=' .. shquote(SCREENSHOT))
      return ok and helpers.read_file(SCREENSHOT) or nil, err
    end

    lazy_setup(function()
      srv = harness.start{ url = helpers.pw_url(), workers = WORKERS, max = MAX, threads = 8 }
      pids = srv:worker_pids()
      -- each request holds a connection 30 ms: 12 clients keep both pools
      -- full and make some wait; /pgpool/metrics scraped twice a second,
      -- the page's screenshot taken after 8 s
      local started = helpers.now()
      local bench = srv:ab_start('/sleep?s=0.03', 1000000, CLIENTS, 10)
      scrapes = {}
      while not bench.finished() and helpers.now() < started + 30 do
        local status, body = srv:get('/pgpool/metrics', 5)
        scrapes[#scrapes + 1] = { status = status, body = body }
        if not screenshot and helpers.now() >= started + 8 then
          screenshot = { take_screenshot() }
        end
        helpers.sleep(0.5)
      end
      load = bench.result()
      helpers.sleep(1.5)        -- every worker publishes once more, idle
    end)

    lazy_teardown(function()
      if srv then srv:stop() end
      helpers.wait_until(function() return helpers.backends_or_nil('pgpool') == 0 end, 10)
    end)

    it('served the load: no failed request', function()
      assert.is_true(load.ok > 100, load.output)
      assert.are.equal(0, load.failed, load.output)
      assert.are.equal(0, load.non_2xx, load.output)
      assert.are.equal(WORKERS, set_size(pids))
    end)

    it('/pgpool/data holds every worker\'s snapshot with its history, and totals that sum them', function()
      local status, body = srv:get('/pgpool/data')
      assert.are.equal(200, status, body)
      local data = helpers.decode_json(body)
      assert.are.equal(WORKERS, #data.workers)
      local queries = 0
      for _, worker in ipairs(data.workers) do
        assert.is_true(pids[worker.pid], 'pid ' .. tostring(worker.pid) .. ' is no worker of this nginx')
        local st = worker.pools[1]
        assert.are.equal('default', st.name)
        assert.are.equal(MAX, st.max)
        assert.is_true(#st.history >= 5, #st.history .. ' samples')
        assert.is_string(st.health.status)
        queries = queries + st.queries
      end
      assert.are.equal('default', data.totals[1].name)
      assert.are.equal(WORKERS, data.totals[1].workers)
      assert.are.equal(queries, data.totals[1].queries)
      assert.are.equal(WORKERS * MAX, data.totals[1].max)
      -- every request ran one query; ab may leave up to CLIENTS unanswered at its time limit
      assert.is_true(queries >= load.complete and queries <= load.complete + CLIENTS,
        ('%d queries for %d requests'):format(queries, load.complete))
    end)

    it('/pgpool/metrics labels both workers\' series by pid and passes promtool check metrics', function()
      assert.is_true(#scrapes >= 6, #scrapes .. ' scrapes')
      for i, scrape in ipairs(scrapes) do
        assert.are.equal(200, scrape.status, scrape.body)
        local _, labelled = counters_of(scrape.body)
        assert.are.same(pids, labelled, 'scrape ' .. i)
        local rc, out = promtool(scrape.body)
        assert.are.equal(0, rc, 'scrape ' .. i .. ': ' .. out)
      end
    end)

    it('never shows a counter of a worker going backwards between consecutive scrapes', function()
      local grew = 0
      local before = counters_of(scrapes[1].body)
      for i = 2, #scrapes do
        local now = counters_of(scrapes[i].body)
        for series, value in pairs(before) do
          assert.is_not_nil(now[series], series .. ' gone in scrape ' .. i)
          assert.is_true(now[series] >= value,
            ('%s went from %s to %s in scrape %d'):format(series, value, now[series], i))
          if now[series] > value then grew = grew + 1 end
        end
        before = now
      end
      assert.is_true(grew > 0, 'no counter moved under load')
    end)

    it('draws every worker\'s pool, its history and figures in headless Chromium', function()
      -- health is windowed: it may turn from 'warning' to 'ok' while the
      -- page is drawn, so the card shows the status before or after
      local _, before_body = srv:get('/pgpool/data')
      local status_before = {}
      for _, worker in ipairs(helpers.decode_json(before_body).workers) do
        status_before[worker.pid] = worker.pools[1].health.status
      end
      local dom = chromium(srv.url .. '/pgpool/', '--dump-dom')
      local _, body = srv:get('/pgpool/data')
      local data = helpers.decode_json(body)
      local _, stats_body = srv:get('/stats')
      local stats = {}
      for _, st in ipairs(helpers.decode_json(stats_body).workers) do stats[st.pid] = st end

      assert.is_true(tonumber(dom:match('data%-renders="(%d+)"') or '0') >= 2, 'the page did not poll')
      local cards = cards_of(dom)
      assert.are.equal(WORKERS, #cards, dom)
      local shown = {}
      for _, card in ipairs(cards) do shown[card.pid] = card end
      for _, worker in ipairs(data.workers) do
        local card = assert(shown[worker.pid], 'no card for worker ' .. worker.pid)
        local st = worker.pools[1]
        assert.are.equal(st.name, card.pool)
        assert.is_true(card.status == st.health.status or card.status == status_before[worker.pid],
          ('card shows %s; health was %s before the page and %s after')
            :format(card.status, tostring(status_before[worker.pid]), st.health.status))
        -- the chart: drawn from the samples, its peak the history's
        local peak = 0
        for _, sample in ipairs(st.history) do peak = math.max(peak, sample.in_use) end
        assert.is_true(card.samples >= 5, card.samples .. ' samples drawn')
        assert.is_true(card.points >= 10, card.points .. ' points in the in-use area')
        assert.is_true(peak >= 1, 'the load never showed in the history')
        assert.are.equal(peak, card.peak_in_use)
        -- figures that stay still once the load is over: the page's, the
        -- data's and the worker's pgpool.stats() (/stats) agree
        for _, field in ipairs{ 'max', 'limit', 'queries', 'acquired', 'created', 'timeouts', 'leaked' } do
          assert.are.equal(st[field], card.figures[field], field .. ' of ' .. worker.pid)
          assert.are.equal(stats[worker.pid][field], card.figures[field], field .. ' of ' .. worker.pid)
        end
      end
      local totals = drawn(dom):match('<tr[^>]-data%-total%-pool="default"[^>]*>(.-)</tr>')
      assert.is_string(totals, 'no totals row')
      assert.are.equal(data.totals[1].queries,
        tonumber(totals:match('data%-field="queries" data%-value="(%d+)"')))
      assert.are.equal(WORKERS, tonumber(totals:match('data%-field="workers" data%-value="(%d+)"')))
    end)

    it('saved a 1280x900 screenshot of the page under load (' .. SCREENSHOT .. ')', function()
      local png, err = screenshot[1], screenshot[2]
      assert(png, tostring(err))
      assert.are.equal('\137PNG\r\n\26\n', png:sub(1, 8))
      assert.are.equal('IHDR', png:sub(13, 16))
      local width, height = string.unpack('>I4>I4', png, 17)
      assert.are.same({ 1280, 900 }, { width, height })
      assert.is_true(#png > 20000, #png .. ' bytes: an empty page?')
    end)

    it('/pgpool/health answers 200 with each worker\'s pools, none critical', function()
      local status, body = srv:get('/pgpool/health')
      assert.are.equal(200, status, body)
      local health = helpers.decode_json(body)
      assert.are_not.equal('critical', health.status)
      assert.are.equal(WORKERS, #health.workers)
      for _, worker in ipairs(health.workers) do
        assert.is_true(pids[worker.pid])
        assert.are.equal('default', worker.pools[1].name)
        assert.are_not.equal('critical', worker.pools[1].status)
      end
    end)

    it('sends /pgpool to /pgpool/, whose data URL is relative', function()
      local status = srv:get('/pgpool')
      assert.are.equal(301, status)
    end)

    it('shows the conninfo\'s password nowhere, and logs no error', function()
      local password = os.getenv('PGPOOL_TEST_PASSWORD')
      assert.is_true(#password > 4)
      for _, path in ipairs{ '/pgpool/', '/pgpool/data', '/pgpool/metrics', '/pgpool/health', '/stats' } do
        local _, body = srv:get(path)
        assert.is_nil(body:find(password, 1, true), path)
      end
      local log = srv:error_log()
      assert.is_nil(log:find(password, 1, true))
      assert.is_nil(log:find('[error]', 1, true), log)
    end)
  end)

  describe('cut off from its server (the fault proxy resets every connection)', function()
    local srv, proxy

    lazy_setup(function()
      proxy = helpers.fault_proxy{}
      srv = harness.start{ url = proxy:conninfo(), workers = 2, max = 2, threads = 4 }
    end)

    lazy_teardown(function()
      if srv then srv:stop() end
      if proxy then proxy:stop() end
    end)

    -- Requests (direct calls) until /pgpool/health answers `want`, within
    -- `seconds`; returns the last status and body.
    local function health_becomes(want, seconds)
      local status, body
      helpers.wait_until(function()
        for _ = 1, 4 do srv:get('/query?id=1', 5) end
        status, body = srv:get('/pgpool/health', 5)
        return status == want
      end, seconds, 0.2)
      return status, body
    end

    it('/pgpool/health: 200, then 503 naming the failed attempts, then 200 once the server is back', function()
      local status, body = health_becomes(200, 10)
      assert.are.equal(200, status, body)

      proxy:set('reset')
      status, body = health_becomes(503, 15)
      assert.are.equal(503, status, body)
      local health = helpers.decode_json(body)
      assert.are.equal('critical', health.status)
      local reasons = {}
      for _, worker in ipairs(health.workers) do
        for _, pool in ipairs(worker.pools) do
          if pool.status == 'critical' then
            for _, reason in ipairs(pool.reasons) do reasons[#reasons + 1] = reason end
          end
        end
      end
      assert.matches('connection attempt%(s%) failed', table.concat(reasons, '\n'), 1, false)

      proxy:set('pass')
      status, body = health_becomes(200, 40)
      assert.are.equal(200, status, body)
    end)
  end)

  describe('in a plain Lua process (pgpool.dashboard_html and pgpool.snapshot)', function()
    local pgpool = require 'pgpool'

    after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

    it('draws this process\'s pool from a snapshot served as JSON', function()
      local pool = pgpool.configure(helpers.pool_options('dashboard-plain', { max = 3 }))
      for i = 1, 5 do assert.truthy(pool:query('select $1::int', i)) end
      -- the housekeeper samples the history once a second
      assert.is_true(helpers.wait_until(function() return #pool:history() >= 3 end, 10))
      local served = 0
      local dom = dump_dom_served_by_this_process{
        ['/pgpool/'] = function() return 'text/html', pgpool.dashboard_html() end,
        ['/pgpool/data'] = function()
          served = served + 1
          return 'application/json', cjson.encode(pgpool.snapshot{ history = true })
        end,
      }
      assert.is_true(served >= 2, served .. ' data requests')
      local cards = cards_of(dom)
      assert.are.equal(1, #cards, dom)
      local card, st = cards[1], pool:stats()
      assert.are.equal(require('pgpool.core').pid(), card.pid)
      assert.are.equal('dashboard-plain', card.pool)
      assert.is_true(card.samples >= 3, card.samples .. ' samples drawn')
      for _, field in ipairs{ 'max', 'queries', 'acquired', 'created' } do
        assert.are.equal(st[field], card.figures[field], field)
      end
      assert.is_nil(drawn(dom):find('data-total-pool', 1, true), 'a totals row for one process')
    end)
  end)
end)
