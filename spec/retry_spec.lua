-- Safe retry of a dead hand-out, and a COMMIT whose outcome is unknown.
--
-- A connection returned less than 5 ms ago is handed out without the
-- liveness check (the fast path). When its backend was terminated in that
-- window, the first statement fails with proof that it never ran: pgpool
-- replaces the connection and runs it once more. Nothing else is retried.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

describe('a connection terminated just after its release', function()
  local killer
  before_each(function()
    killer = pgpool.configure(opts('retry-killer', { max = 1 }))
  end)
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  -- Terminate the backend of pool's idle connection, then run `use` at once
  -- (well inside the 5 ms window); returns use's results.
  -- Through PgBouncer a released connection has no backend of its own: a
  -- terminated one was PgBouncer's, which the client never sees.
  local BOUNCED = helpers.via_pgbouncer()
    and 'through PgBouncer: a connection outside a transaction has no backend of its own to terminate'

  local function kill_then(pool, use)
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    conn:release()
    assert(killer:query('select pg_terminate_backend($1::int) as ok', pid))
    return use()
  end

  it('is replaced and pool:query runs its statement once more (100 of 100 served)', function()
    if BOUNCED then return pending(BOUNCED) end
    local pool = pgpool.configure(opts('retry-query', { max = 1 }))
    for i = 1, 100 do
      local res, msg = kill_then(pool, function() return pool:query('select $1::int as i', i) end)
      assert.truthy(res, msg)
      assert.are.equal(i, res[1].i)
    end
    local st = pool:stats()
    assert.is_true(st.retries >= 1, 'retries ' .. st.retries)
    assert.are.equal(100, st.queries - st.query_errors)
  end)

  it('is replaced for the first conn:query of a checkout', function()
    if BOUNCED then return pending(BOUNCED) end
    local pool = pgpool.configure(opts('retry-conn', { max = 1 }))
    local failures = 0
    for i = 1, 50 do
      local res = kill_then(pool, function()
        local c = assert(pool:acquire())
        local r = c:query('select $1::int as i', i)
        c:release()
        return r
      end)
      if not res then failures = failures + 1 end
    end
    assert.are.equal(0, failures)
    assert.is_true(pool:stats().retries >= 1)
  end)

  it('never runs again a statement the server ended while it ran', function()
    if BOUNCED then return pending(BOUNCED) end
    local pool = pgpool.configure(opts('retry-never', { max = 1 }))
    local conn = assert(pool:acquire())
    local pid = conn:backend_pid()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    local t = helpers.start_thread(function(path, cpath, target)
      package.path, package.cpath = path, cpath
      require('luv').sleep(300)
      local k = assert(require('pgpool').pool('retry-killer'))
      k:query('select pg_terminate_backend($1::int)', target)
    end, pid)
    local res, _, code = conn:query('select pg_sleep(2)')
    assert.is_nil(res)
    assert.are.equal('57P01', code)
    conn:release()
    t:join()
    assert.are.equal(0, pool:stats().retries)
  end)
end)

describe('a COMMIT whose connection is lost before its answer', function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('returns code 08007 (outcome unknown), not "closed": it may have committed, as here', function()
    if not helpers.has_threads() then return pending('luv threads unavailable') end
    helpers.psql('drop table if exists commit_unknown; create table commit_unknown(a int)')
    local proxy = helpers.fault_proxy{ mode = 'pass' }
    local pool = pgpool.configure{ name = 'commit-unknown', conninfo = proxy:conninfo(), max = 1,
      log_level = 'off' }
    local dropper
    local ok, msg, code, info = pool:transaction(function(conn)
      assert(conn:query('insert into commit_unknown values (1)'))
      -- COMMIT reaches the server after 400 ms; its answer would come back
      -- 400 ms later, but the network goes down at 600 ms
      proxy:set('delay', 400)
      dropper = helpers.start_thread(function(_, _, dir, seq)
        require('luv').sleep(600)
        local f = assert(io.open(dir .. '/control.tmp', 'w'))
        f:write(('%d drop \n'):format(seq))
        f:close()
        os.rename(dir .. '/control.tmp', dir .. '/control')
      end, proxy.dir, proxy.seq + 1)
      return true
    end)
    dropper:join()
    proxy.seq = proxy.seq + 1
    assert.is_nil(ok)
    assert.are.equal('08007', code, msg)
    assert.are.equal('08007', info.sqlstate)
    assert.is_true(info.outcome_unknown)
    assert.truthy(helpers.contains(msg, 'outcome unknown'), msg)
    assert.are.equal('1', helpers.psql('select count(*) from commit_unknown'))
    proxy:stop()
    helpers.psql('drop table commit_unknown')
  end)

  it('still says the transaction rolled back when the connection fails before COMMIT', function()
    helpers.psql('drop table if exists commit_before; create table commit_before(a int)')
    local killer = pgpool.configure(opts('commit-killer', { max = 1 }))
    local pool = pgpool.configure(opts('commit-before', { max = 1 }))
    local ok, _, code = pool:transaction(function(conn)
      assert(conn:query('insert into commit_before values (1)'))
      -- the backend serving the transaction (through PgBouncer, not conn:backend_pid())
      local pid = assert(conn:query('select pg_backend_pid() as pid'))[1].pid
      killer:query('select pg_terminate_backend($1::int)', pid)
      helpers.sleep(0.1)
      return true
    end)
    assert.is_nil(ok)
    assert.are_not.equal('08007', code)
    assert.are.equal('0', helpers.psql('select count(*) from commit_before'))
    helpers.psql('drop table commit_before')
  end)
end)
