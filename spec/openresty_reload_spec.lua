-- max_shared in nginx across reloads: the master runs init_by_lua again on
-- each HUP (the README's block shuts the pool down and configures it anew)
-- while the old workers finish their requests with their connections; the
-- one cap must cover the old workers and the new ones together.
--
-- nginx always loads the LuaJIT build of pgpool, so this runs once, under
-- lua5.4 (see spec/openresty_spec.lua).
local helpers = require 'spec.support.helpers'
package.path = 'examples/openresty/?.lua;' .. package.path
local harness = require 'harness'

local RUN_UNDER = 'lua5.4'
local runtime = os.getenv('PGPOOL_TEST_RUNTIME') or RUN_UNDER

if runtime ~= RUN_UNDER then
  describe('OpenResty reloads with max_shared', function()
    pending('runs under ' .. RUN_UNDER .. ' only (nginx uses the LuaJIT build either way)')
  end)
  return
end

local APP = 'pgpool-reload'
local COUNT = "select count(*) as n from pg_stat_activity where application_name = '" .. APP .. "'"

describe('OpenResty reloads with max_shared', function()
  if not harness.available() then
    pending('nginx, lua-nginx-module, ab or curl missing (see spec/openresty_spec.lua)')
    return
  end

  local WORKERS, MAX, MAX_SHARED, RELOADS = 2, 6, 6, 3
  local srv

  setup(function()
    srv = harness.start{ url = helpers.dsn() .. ' application_name=' .. APP, workers = WORKERS,
                         max = MAX, max_shared = MAX_SHARED, threads = 16 }
  end)

  teardown(function()
    if srv then srv:stop() end
    helpers.wait_until(function() return helpers.backends_or_nil(APP) == 0 end, 10)
  end)

  it('never lets the server see more than max_shared = 6 over 3 reloads under load', function()
    local monitor = harness.monitor(helpers.dsn())
    -- 32 clients on a query holding its connection 20 ms, for 7 s; a reload
    -- every 1.5 s from the second 1.5; the server sampled every 50 ms
    local bench = srv:ab_start('/sleep?s=0.02', 1000000, 32, 7)
    local started, peak, samples, reloads, peaks = helpers.now(), 0, 0, 0, {}
    while not bench.finished() do
      local n = monitor.query(COUNT)[1].n
      samples = samples + 1
      if n > peak then peak = n end
      peaks[reloads + 1] = math.max(peaks[reloads + 1] or 0, n)
      if reloads < RELOADS and helpers.now() - started >= 1.5 * (reloads + 1) then
        srv:reload()
        reloads = reloads + 1
      end
      helpers.sleep(0.05)
    end
    local r = bench.result()
    monitor.close()
    local lost = r.failed + r.non_2xx
    io.stderr:write(('\nreloads under load: peak %d backends (per reload period: %s) in %d samples;'
      .. ' %d requests, %d lost (%d failed, %d non-2xx), %.0f req/s\n'):format(peak,
      table.concat(peaks, ' '), samples, r.complete, lost, r.failed, r.non_2xx, r.rps or 0))
    assert.are.equal(RELOADS, reloads)
    assert.is_true(samples >= 50, samples .. ' samples')
    assert.is_true(r.ok > 100, r.output)
    assert.is_true(peak >= 2, 'peak ' .. peak .. ': the load did not reach the server')
    assert.is_true(peak <= MAX_SHARED,
      ('peak %d backends > max_shared %d (per reload period: %s)'):format(peak, MAX_SHARED,
        table.concat(peaks, ' ')))
  end)
end)
