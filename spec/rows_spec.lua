-- conn:rows(sql, ...): a result read one row at a time, in the memory of a
-- row, that can be left mid-way and leaves its connection clean.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local SERIES = 'select g as v, repeat(\'x\', 100) as pad from generate_series(1, $1) g'

-- How many server sessions are not idle with a statement holding `text`,
-- as another session sees them (by statement, not by pid: through PgBouncer
-- a client's backend_pid is not a server process).
local function not_idle(text)
  return tonumber(helpers.psql(("select count(*) from pg_stat_activity where state <> 'idle' "
    .. "and pid <> pg_backend_pid() and position('%s' in query) > 0"):format(text)))
end

describe('conn:rows', function()
  local pool, conn
  local open, close = helpers.held_connection('rows', { max = 2 }, function(p, c) pool, conn = p, c end)
  before_each(open)
  after_each(close)

  it('gives every row in order, as query would, with parameters', function()
    local n, last = 0, 0
    for row in conn:rows(SERIES, 5000) do
      n = n + 1
      assert.are.equal(last + 1, row.v)
      last = row.v
      assert.are.equal(100, #row.pad)
    end
    assert.are.equal(5000, n)
    local same = conn:query(SERIES, 3)
    local streamed = {}
    for row in conn:rows(SERIES, 3) do streamed[#streamed + 1] = row end
    for i = 1, 3 do assert.are.same(same[i], streamed[i]) end
  end)

  it('holds one row at a time: its peak heap is a small part of the whole result', function()
    -- each in a fresh process, so the heap of this one (busted's, the
    -- earlier specs') does not set the collector's pace
    local function peak_heap(body)
      local out, err, rc = helpers.run_lua(([[
        local pool = require('pgpool').configure{ conninfo = %q, max = 1, log_level = 'off' }
        local conn = assert(pool:acquire())
        collectgarbage('collect')
        local base, peak, n = collectgarbage('count'), 0, 0
        local function sample() peak = math.max(peak, collectgarbage('count') - base) end
        %s
        print(n, math.floor(peak))
      ]]):format(helpers.dsn(), body))
      assert.are.equal(0, rc, err)
      local n, kb = out:match('^(%d+)%s+(%d+)')
      return tonumber(n), tonumber(kb)
    end
    local sql = ('%q, 200000'):format(SERIES)
    local n_stream, streamed = peak_heap(([[
        for _ in conn:rows(%s) do n = n + 1; if n %% 5000 == 0 then sample() end end]]):format(sql))
    local n_whole, whole = peak_heap(([[
        local res = assert(conn:query(%s)); n = #res; sample()]]):format(sql))
    assert.are.equal(200000, n_stream)
    assert.are.equal(200000, n_whole)
    assert.truthy(streamed * 10 < whole, ('streamed peak %d kB vs whole result %d kB'):format(streamed, whole))
  end)

  it('can be left with break: the connection answers the next statement and is reused', function()
    local pid = conn:backend_pid()
    for row in conn:rows('select g from generate_series(1, 10000000) g') do
      if row.g == 10 then break end
    end
    if _VERSION == 'Lua 5.4' and not rawget(_G, 'jit') then
      -- the loop's closing value ended the statement at the break
      assert.are.equal(0, not_idle('generate_series(1, 10000000)'))
    end
    assert.are.equal(42, conn:query('select 42 as x')[1].x)
    assert.are.equal(pid, conn:backend_pid())
  end)

  it('can be left with break inside a transaction, which goes on and commits', function()
    helpers.psql('drop table if exists rows_in_txn; create table rows_in_txn (n int)')
    local t0 = helpers.now()
    local ok, msg, code = pool:transaction(function(c)
      for row in c:rows('select g from generate_series(1, 200000) g') do
        if row.g == 10 then break end
      end
      local res, err, why = c:query('insert into rows_in_txn values (10) returning n')
      if not res then return nil, err, why end
      return true
    end)
    assert.is_true(ok, msg and (msg .. ' ' .. tostring(code)))
    assert.truthy(helpers.now() - t0 < 5)
    assert.are.equal('1', helpers.psql('select count(*) from rows_in_txn'))
    helpers.psql('drop table rows_in_txn')
  end)

  it('ends a stream left open when the connection is released, and the connection goes back', function()
    local iterate = conn:rows('select g from generate_series(1, 10000000) g')
    assert.are.equal(1, iterate().g)
    local pid = conn:backend_pid()
    conn:release()
    local st = pool:stats()
    assert.are.equal(0, st.closed_broken)
    assert.are.equal(1, st.idle)
    local again = assert(pool:acquire())
    assert.are.equal(pid, again:backend_pid())
    assert.are.equal(0, not_idle('generate_series(1, 10000000)'))
    again:release()
    conn = nil
  end)

  it('gives a failure mid-way as one iteration false, msg, code, info, then stops', function()
    local seen, failure = 0, nil
    for row, msg, code, info in conn:rows('select 1 / (5 - g) as v from generate_series(1, 10) g') do
      if row then seen = seen + 1 else failure = { msg, code, info } end
    end
    assert.are.equal(4, seen)
    assert.are.equal('22012', failure[2])
    assert.are.equal('22012', failure[3].sqlstate)
    assert.truthy(failure[1]:find('division by zero', 1, true))
    assert.are.equal(1, conn:query('select 1 as x')[1].x)
  end)

  it('gives a statement that fails at once the same way', function()
    local results = {}
    for row, msg, code in conn:rows('selec 1') do results[#results + 1] = { row, msg, code } end
    assert.are.equal(1, #results)
    assert.is_false(results[1][1])
    assert.are.equal('42601', results[1][3])
  end)

  it('bounds each wait for a row by the statement timeout', function()
    local t0 = helpers.now()
    local results = {}
    for row, _, code in conn:rows({ 'select pg_sleep(10)', timeout = 0.3 }) do
      results[#results + 1] = { row, code }
    end
    assert.truthy(helpers.now() - t0 < 4)
    assert.are.same({ { false, 'timeout' } }, results)
    assert.are.equal(1, conn:query('select 1 as x')[1].x)
  end)

  it('tells its loop when another statement on the connection ended it', function()
    local iterate = conn:rows('select g from generate_series(1, 1000000) g')
    assert.are.equal(1, iterate().g)
    assert.are.equal(7, conn:query('select 7 as x')[1].x)
    local row, msg, code = iterate()
    assert.is_false(row)
    assert.are.equal('closed', code)
    assert.truthy(msg:find('closed before its end', 1, true), msg)
    assert.is_nil(iterate())
  end)

  it('gives "shutdown" to a loop whose pool was shut down mid-way, then ends', function()
    local iterate = conn:rows('select g from generate_series(1, 1000000) g')
    assert.are.equal(1, iterate().g)
    pool:shutdown{ timeout = 0.1 }
    local row, msg, code = iterate()
    assert.is_false(row)
    assert.are.equal('shutdown', code, msg)
    assert.is_nil(iterate())
  end)

  it('counts a stream as one statement', function()
    local before = pool:stats().queries
    for _ in conn:rows(SERIES, 10) do end
    assert.are.equal(before + 1, pool:stats().queries)
  end)

  it('counts a stream closed early as one statement too', function()
    local before = pool:stats().queries
    local iterate, _, _, rows = conn:rows(SERIES, 100)
    assert.are.equal(1, iterate().v)
    rows:close()
    rows:close()
    assert.is_nil(iterate())
    assert.are.equal(before + 1, pool:stats().queries)
  end)

  it('refuses misuse like query does', function()
    assert.has_error(function() conn:rows(nil) end, nil)
    local ok, err = pcall(conn.rows, conn, 42)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'conn:rows'", err)
    conn:release()
    ok, err = pcall(conn.rows, conn, 'select 1')
    assert.is_false(ok)
    assert.matches('connection released', err)
    conn = nil
  end)
end)

-- The slow-query log and its counter measure the server's time: the
-- statement's send and each wait for a row, not the caller's loop. The
-- loop's last iteration delivers the log lines of the stream's end to
-- on_log, as any other call does (the iterator once read the per-state log
-- context from the wrong upvalue, and delivered none).
describe('conn:rows and slow_query', function()
  local pool, conn
  before_each(function()
    pool = pgpool.configure(helpers.pool_options('rows_slow', { max = 1, slow_query = 0.2 }))
    conn = assert(pool:acquire())
  end)
  after_each(function()
    pgpool.on_log(nil)
    conn:release()
    pgpool.shutdown_all{ timeout = 1 }
  end)

  it('does not count a slow caller\'s loop as a slow query', function()
    local before = pool:stats().slow_queries
    for _ in conn:rows('select g from generate_series(1, 3) g') do helpers.sleep(0.15) end
    assert.are.equal(before, pool:stats().slow_queries)
  end)

  it('counts a statement whose rows come slowly from the server, and tells on_log when the loop ends', function()
    local before = pool:stats().slow_queries
    local lines = helpers.capture_log(pgpool)
    local n = 0
    for _ in conn:rows('select g, pg_sleep(0.15) from generate_series(1, 2) g') do n = n + 1 end
    local found = #helpers.log_lines(lines, 'slow query')    -- before any other pgpool call
    assert.are.equal(2, n)
    assert.are.equal(1, found)
    assert.are.equal(before + 1, pool:stats().slow_queries)
  end)
end)
