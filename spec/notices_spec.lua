-- Server notices go through pgpool's log (with the pool's log_level), never
-- to stderr: RAISE NOTICE shows up as a log line, and a run whose backends
-- are terminated under it prints nothing with log_level = "off".
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

describe('server notices', function()
  local lines
  local start, finish = helpers.spec_isolation(pgpool, function(captured) lines = captured end)
  before_each(start)
  after_each(finish)

  it('arrive as pgpool log lines at their level', function()
    local pool = pgpool.configure(opts('notices', { max = 1, log_level = 'debug' }))
    local conn = assert(pool:acquire())
    assert(conn:exec([[do $$ begin raise notice 'hello from the server'; raise warning 'careful'; end $$]]))
    assert(conn:query("select 1"))   -- the log lines are delivered with a call's outcome
    conn:release()
    local hello = helpers.log_lines(lines, 'hello from the server')
    assert.are.equal(1, #hello)
    assert.are.equal('info', hello[1].level)
    assert.truthy(hello[1].message:find('server: hello from the server', 1, true), hello[1].message)
    assert.falsy(hello[1].message:find('NOTICE', 1, true), hello[1].message)
    local careful = helpers.log_lines(lines, 'careful')
    assert.are.equal(1, #careful)
    assert.are.equal('warn', careful[1].level)
  end)

  it('follow the pool log_level', function()
    local pool = pgpool.configure(opts('notices-quiet', { max = 1, log_level = 'warn' }))
    local conn = assert(pool:acquire())
    assert(conn:exec([[do $$ begin raise notice 'not shown'; end $$]]))
    conn:release()
    assert.are.equal(0, #helpers.log_lines(lines, 'not shown'))
  end)
end)

describe('a run with terminated backends and log_level = "off"', function()
  it('prints nothing on stderr', function()
    local out, err, rc = helpers.run_lua([[
      local pgpool = require 'pgpool'
      dsn = os.getenv('PGPOOL_TEST_DSN')
      local pool = pgpool.configure{ name = 'quiet', conninfo = dsn, max = 3, min = 2, log_level = 'off', query_timeout = 2 }
      local killer = pgpool.configure{ name = 'killer', conninfo = dsn .. ' application_name=killer', max = 1, log_level = 'off' }
      for round = 1, 5 do
        local held = {}
        for i = 1, 2 do held[i] = pool:acquire() end
        for i = 1, 2 do if held[i] then held[i]:query('select pg_sleep(0.01)') end end
        killer:exec("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'pgpool' and pid <> pg_backend_pid()")
        local k = killer:acquire()
        if k then k:exec("do $$ begin raise notice 'quiet notice'; raise warning 'quiet warning'; end $$"); k:release() end
        for i = 1, 2 do if held[i] then held[i]:query('select 1'); held[i]:exec('select 1'); held[i]:release() end end
        pool:query('select 1')
      end
      pgpool.shutdown_all{ timeout = 1 }
      io.write('finished')
    ]])
    assert.are.equal(0, rc, err)
    assert.are.equal('finished', out)
    assert.are.equal('', err)
  end)
end)
