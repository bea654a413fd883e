-- LISTEN/NOTIFY: pool:listen / pgpool.listen on a connection of its own,
-- wait(timeout) for the next notification, and a reconnect that says so
-- after the connection is lost (a terminated backend, a server restart).
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options
local shquote, must_run, run = helpers.shquote, helpers.must_run, helpers.run

local function notify(pool, channel, payload)
  assert(pool:exec(("select pg_notify('%s', '%s')"):format(channel, payload)))
end

describe('pool:listen', function()
  local pool
  before_each(function() pool = pgpool.configure(opts('listen', { max = 3, log_level = 'error' })) end)
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('gives each notification as channel, payload, pid, in order', function()
    local l = assert(pool:listen('jobs', 'Other Channel'))
    local sender = assert(pool:acquire())
    local sender_pid = sender:backend_pid()
    assert(sender:exec("notify jobs, 'one'; notify \"Other Channel\", 'two'; notify unheard, 'x'"))
    sender:release()
    assert.are.same({ 'jobs', 'one', sender_pid }, { l:wait(5) })
    assert.are.same({ 'Other Channel', 'two', sender_pid }, { l:wait(5) })
    assert.are.same({ nil, 'timeout', 'timeout' }, { l:wait(0) })
    l:close()
  end)

  it('waits at most its timeout, and wakes as soon as a notification comes', function()
    local l = assert(pool:listen('jobs'))
    local t0 = helpers.now()
    assert.are.same({ nil, 'timeout', 'timeout' }, { l:wait(0.3) })
    local took = helpers.now() - t0
    assert.truthy(took >= 0.25 and took < 2, took)
    -- a notification sent from another process while we wait
    local out = os.tmpname()
    os.execute(('(sleep 0.3; psql %s -Xqc "notify jobs, \'late\'") >%s 2>&1 &')
      :format(shquote(helpers.dsn()), shquote(out)))
    t0 = helpers.now()
    local channel, payload = l:wait(10)
    assert.are.equal('jobs', channel)
    assert.are.equal('late', payload)
    assert.truthy(helpers.now() - t0 < 5)
    os.remove(out)
    l:close()
  end)

  it('holds one connection of the pool, gives it back clean, and counts against max', function()
    local l = assert(pool:listen('jobs'))
    assert.are.equal(1, pool:stats().in_use)
    l:close()
    local st = pool:stats()
    assert.are.equal(0, st.in_use)
    assert.are.equal(1, st.idle)
    local conn = assert(pool:acquire())
    local res = conn:query('select count(*)::int as n from pg_listening_channels()')
    assert.are.equal(0, res[1].n)
    conn:release()
  end)

  it('reconnects after its backend is terminated, says so once, and hears again', function()
    local l = assert(pool:listen('jobs'))
    helpers.psql("select pg_terminate_backend(pid) from pg_stat_activity where query like 'LISTEN%'")
    local _, msg, code = l:wait(5)
    assert.are.equal('reconnected', code)
    assert.truthy(msg:find('missed', 1, true))
    notify(pool, 'jobs', 'after')
    local channel, payload = l:wait(5)
    assert.are.same({ 'jobs', 'after' }, { channel, payload })
    l:close()
  end)

  it('waits without limit with math.huge, and wakes for a notification', function()
    local l = assert(pool:listen('jobs'))
    os.execute(('(sleep 0.3; psql %s -Xqc "notify jobs, \'huge\'") >/dev/null 2>&1 &'):format(shquote(helpers.dsn())))
    local t0 = helpers.now()
    assert.are.equal('huge', select(2, l:wait(math.huge)))
    assert.truthy(helpers.now() - t0 < 3)
    l:close()
  end)

  -- A thread waits with math.huge; the pool is shut down from here: the
  -- wait ends with code "shutdown" well before shutdown's own deadline, and
  -- shutdown finds the listener's connection back (true).
  it('ends a wait(math.huge) in another thread when the pool is shut down', function()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    local out = helpers.tmpname()
    local t = helpers.start_thread(function(path, cpath, file)
      package.path, package.cpath = path, cpath
      local p = assert(require('pgpool').pool('listen'))
      local l = assert(p:listen('jobs'))
      local _, msg, code = l:wait(math.huge)
      l:close()
      local f = io.open(file, 'w')
      f:write(tostring(code), '\n', tostring(msg))
      f:close()
    end, out)
    assert(helpers.wait_until(function() return pool:stats().in_use == 1 end, 5))
    helpers.sleep(0.2)       -- the thread is in its wait
    local t0 = helpers.now()
    local ok, msg = pool:shutdown{ timeout = 3 }
    local took = helpers.now() - t0
    local ended = helpers.wait_until(function()
      local f = io.open(out)
      if f then f:close() end
      return f ~= nil
    end, 5)
    if not ended then      -- wake the stuck thread, so that it can be joined
      local sender = pgpool.configure(opts('listen-waker', { max = 1 }))
      sender:exec("notify jobs, 'wake'")
    end
    t:join()
    local f = assert(io.open(out))
    local text = f:read('a')
    f:close()
    os.remove(out)
    assert.is_true(ended, 'the wait did not end at shutdown')
    assert.are.equal('shutdown', text:match('^[^\n]*'), text)
    assert.is_true(ok, msg)
    assert.is_true(took < 1.5, ('shutdown took %.2f s'):format(took))
  end)

  it('works on the default pool, and refuses misuse', function()
    pgpool.configure(opts('default', { max = 2 }))
    local l = assert(pgpool.listen('jobs'))
    notify(pool, 'jobs', 'x')
    assert.are.equal('x', select(2, l:wait(5)))
    assert.has_error(function() l:wait(-1) end)
    assert.has_error(function() l:wait(0 / 0) end)
    assert.has_error(function() pool:listen() end)
    assert.has_error(function() pool:listen('') end)
    assert.has_error(function() pool:listen('a\0b') end)
    l:close()
    assert.has_error(function() l:wait(1) end)
  end)
end)

describe('a listener across a server restart', function()
  local dir, dsn, pgbin

  setup(function()
    dir = must_run('mktemp -d "${TMPDIR:-/tmp}/pgpool-listen.XXXXXX"')
    must_run('spec/support/pgserver.sh start ' .. shquote(dir) .. ' 20')
    local function env(name)
      return must_run(('. %s/env && printf %%s "$%s"'):format(shquote(dir), name))
    end
    dsn, pgbin = env('PGPOOL_TEST_DSN'), env('PGPOOL_TEST_PGBIN')
  end)

  teardown(function()
    pgpool.shutdown_all{ timeout = 1 }
    if dir then run('spec/support/pgserver.sh stop ' .. shquote(dir)) end
  end)

  it('gets a new connection once the server is back, LISTENs again and hears', function()
    local pool = pgpool.configure{ name = 'listen-restart', conninfo = dsn, max = 2, log_level = 'off',
                                   connect_timeout = 2 }
    local l = assert(pool:listen('jobs'))
    must_run(('runuser -u postgres -- %s/pg_ctl -D %s/data -w -t 30 -m fast restart >/dev/null')
      :format(pgbin, shquote(dir)))
    local code
    local deadline = helpers.now() + 20
    repeat
      local _, _, c = l:wait(1)
      code = c
    until code == 'reconnected' or helpers.now() > deadline
    assert.are.equal('reconnected', code)
    assert(pool:exec("notify jobs, 'back'"))
    local channel, payload = l:wait(5)
    assert.are.same({ 'jobs', 'back' }, { channel, payload })
    l:close()
  end)
end)

describe('pool:listen, collected without close', function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('does not hand its LISTENing connection to the next user of the pool', function()
    local pool = pgpool.configure(opts('listen_gc', { max = 1, log_level = 'off' }))
    local l = assert(pool:listen('gc_jobs'))
    l = nil
    collectgarbage('collect')
    collectgarbage('collect')
    local conn = assert(pool:acquire(2))
    local res = assert(conn:query('select count(*)::int as n from pg_listening_channels()'))
    conn:release()
    assert.are.equal(0, res[1].n)
  end)
end)
