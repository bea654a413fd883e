-- statement_cache = N: per connection, an LRU of at most N named prepared
-- statements, seen from the server in pg_prepared_statements of that same
-- connection (the inspecting query goes through the cache too, and is
-- accounted for). Stale plans are re-prepared transparently outside a
-- transaction block; inside one the error is returned.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local null = pgpool.null
local bytea = pgpool.bytea
local unpack = table.unpack or unpack

local INSPECT = 'select statement, (generic_plans + custom_plans)::int as runs from pg_prepared_statements'

-- Through PgBouncer (transaction mode) pg_prepared_statements is the view
-- of whichever server connection runs the inspecting query, and holds
-- other clients' statements too: the specs that count on it are skipped.
local SESSION_VIEW = helpers.via_pgbouncer()
  and "through PgBouncer: counts pg_prepared_statements of one server session, which PgBouncer's server connections share"

local pool, conn

-- A pool of one connection with the given cache size, and that connection.
local function open(cache_size, name, query_timeout)
  pool = pgpool.configure{ name = name or 'statement_cache_spec', conninfo = helpers.dsn(), max = 1,
    statement_cache = cache_size, query_timeout = query_timeout or 0, log_level = 'warn' }
  conn = assert(pool:acquire())
  return pool, conn
end

after_each(function()
  if conn then conn:release() end
  conn = nil
  pgpool.shutdown_all{ timeout = 1 }
end)

-- The prepared statements of conn: { [sql] = times executed }, and how many
-- there are, the INSPECT query itself left out (it is prepared too when the
-- cache is on). Also returns whether INSPECT was among them.
local function prepared(c)
  local res = assert((c or conn):query(INSPECT))
  local by_sql, n, inspect_seen = {}, 0, false
  for _, row in ipairs(res) do
    if row.statement == INSPECT then
      inspect_seen = true
    else
      by_sql[row.statement] = row.runs
      n = n + 1
    end
  end
  return by_sql, n, inspect_seen
end

local function total_prepared(c)
  local _, n, inspect_seen = prepared(c)
  return n + (inspect_seen and 1 or 0)
end

describe('statement_cache = N', function()
  it('prepares a repeated statement once and executes that prepared statement each time', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    open(10)
    local sql = 'select $1::int + 1 as v'
    for i = 1, 5 do
      assert.are.equal(i + 1, assert(conn:query(sql, i))[1].v)
    end
    local by_sql, n = prepared()
    assert.are.equal(1, n)
    assert.are.equal(5, by_sql[sql])
  end)

  it('keeps using the prepared statement across release and acquire of the same connection', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    open(10)
    local sql = 'select $1::text as v'
    assert(conn:query(sql, 'a'))
    conn:release()
    conn = assert(pool:acquire())    -- max = 1: the same connection
    assert(conn:query(sql, 'b'))
    local by_sql, n = prepared()
    assert.are.equal(1, n)
    assert.are.equal(2, by_sql[sql])
  end)

  it('runs pool:query through the cache as well', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    open(10)
    conn:release()
    conn = nil
    local sql = 'select $1::int * 2 as v'
    for i = 1, 3 do assert.are.equal(2 * i, assert(pool:query(sql, i))[1].v) end
    conn = assert(pool:acquire())
    local by_sql, n = prepared()
    assert.are.equal(3, by_sql[sql])
    assert.are.equal(1, n)
  end)

  it('never keeps more than N statements: the least recently used is deallocated', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    open(3)
    for i = 1, 10 do assert(conn:query('select ' .. i .. ' as v')) end
    -- INSPECT is prepared now, evicting "select 8": 9, 10 and INSPECT remain
    local by_sql, n, inspect_seen = prepared()
    assert.is_true(inspect_seen)
    assert.are.equal(2, n)
    assert.are.same({ ['select 9 as v'] = 1, ['select 10 as v'] = 1 }, by_sql)
  end)

  it('evicts the least recently used statement, not the oldest prepared one', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    open(3)
    local A, B, C = 'select 1 as a', 'select 1 as b', 'select 1 as c'
    assert(conn:query(A))
    assert(conn:query(B))
    assert(conn:query(A))      -- A is now more recently used than B
    assert(conn:query(C))      -- cache full: B, A, C (least recent first)
    local by_sql = prepared()  -- INSPECT evicts B
    assert.are.same({ [A] = 2, [C] = 1 }, by_sql)
  end)

  it('returns the same results as without the cache, for every kind of value', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    -- { sql, number of parameters, parameters... }
    local CASES = {
      { 'select $1::int as a, $2::text as b, $3::bool as c', 3, 1, 'x', true },
      { 'select $1::int as a, $2::text as b, $3::bool as c', 3, 2, nil, false },
      { 'select $1::int as a, $2::text as b, $3::bool as c', 3, null, 'y', null },
      { 'select $1::bytea as a', 1, bytea('\0\255') },
      { 'select $1::int[] as a', 1, { 1, null, 3 } },
      { 'select $1::float8 as a, $2::numeric as b', 2, 0.1, '1.50' },
      { 'select i as a from generate_series(1, $1::int) i', 1, 5 },
      { "select $1::text || 'x' as a", 1, 'a\'b"c' },
    }
    local function run_all(c)
      local out = {}
      for round = 1, 2 do
        for i, case in ipairs(CASES) do
          local res = assert(c:query(case[1], unpack(case, 3, 2 + case[2])))
          out[round * 100 + i] = { rows = res, columns = res.columns, command = res.command }
        end
      end
      return out
    end
    open(0, 'statement_cache_spec_off')
    local uncached = run_all(conn)
    assert.are.equal(0, total_prepared())
    conn:release()
    conn = nil
    local cached_pool = pgpool.configure{ name = 'statement_cache_spec_on', conninfo = helpers.dsn(), max = 1,
      statement_cache = 4, log_level = 'warn' }
    local c = assert(cached_pool:acquire())
    local cached = run_all(c)
    local in_cache = total_prepared(c)
    c:release()
    assert.are.same(uncached, cached)
    assert.are.equal(4, in_cache)   -- the cache was in use, and full
  end)

  it('uses different statements for a bytea and a text parameter in the same position', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    open(10)
    local sql = 'select $1::text as v'
    assert.are.equal('x', assert(conn:query(sql, 'x'))[1].v)
    assert.are.equal('\\x78', assert(conn:query(sql, bytea('x')))[1].v)
    assert.are.equal('y', assert(conn:query(sql, 'y'))[1].v)
    assert.are.equal('\\x79', assert(conn:query(sql, bytea('y')))[1].v)
    local res = assert(conn:query(
      'select count(*)::int as n, sum(generic_plans + custom_plans)::int as runs from pg_prepared_statements where statement = $1',
      sql))
    assert.are.equal(2, res[1].n)
    assert.are.equal(4, res[1].runs)
  end)

  it('keeps a statement cached after it fails at execution (22012), and reuses it', function()
    open(10)
    local sql = 'select 1 / $1::int as v'
    local res, msg, code = conn:query(sql, 0)
    assert.is_nil(res)
    assert.are.equal('22012', code, msg)
    local NAME = 'select name from pg_prepared_statements where statement = $1'
    local before = assert(conn:query(NAME, sql))
    assert.are.equal(1, #before)
    assert.are.equal(1, assert(conn:query(sql, 1))[1].v)
    local after = assert(conn:query(NAME, sql))
    assert.are.equal(1, #after)
    assert.are.equal(before[1].name, after[1].name)
  end)

  it('returns the error of a statement that cannot be prepared (42601) and caches nothing for it', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    open(10)
    local res, msg, code = conn:query('select from where')
    assert.is_nil(res)
    assert.are.equal('42601', code, msg)
    local _, n = prepared()
    assert.are.equal(0, n)
    assert.are.equal(1, assert(conn:query('select 1 as v'))[1].v)
  end)
end)

describe('statement_cache: stale statements', function()
  before_each(function()
    helpers.psql('drop table if exists statement_cache_spec_t; '
      .. 'create table statement_cache_spec_t (a int); insert into statement_cache_spec_t values (1)')
  end)

  teardown(function()
    helpers.psql('drop table if exists statement_cache_spec_t')
  end)

  local SELECT_ALL = 'select * from statement_cache_spec_t'

  -- query_timeout > 0 takes the asynchronous path through libpq: both paths.
  for _, query_timeout in ipairs{ 0, 5 } do
    local with_timeout = (' (query_timeout = %d)'):format(query_timeout)

    it('re-prepares transparently after alter table changed the result type (0A000), outside a transaction'
        .. with_timeout, function()
      open(10, nil, query_timeout)
      assert.are.same({ 'a' }, assert(conn:query(SELECT_ALL)).columns)
      helpers.psql('alter table statement_cache_spec_t add column b int default 7')
      local res, msg, code = conn:query(SELECT_ALL)
      assert(res, ('%s (%s)'):format(tostring(msg), tostring(code)))
      assert.are.same({ 'a', 'b' }, res.columns)
      assert.are.equal(7, res[1].b)
      -- the stale statement was deallocated, not left behind
      local res2 = assert(conn:query('select count(*)::int as n from pg_prepared_statements where statement = $1',
        SELECT_ALL))
      assert.are.equal(1, res2[1].n)
    end)

    it('re-prepares transparently after deallocate all (26000), outside a transaction' .. with_timeout, function()
      open(10, nil, query_timeout)
      local sqls = { 'select 1 as v', 'select $1::int as v', SELECT_ALL }
      assert(conn:query(sqls[1]))
      assert(conn:query(sqls[2], 2))
      assert(conn:query(sqls[3]))
      assert(conn:exec('deallocate all'))
      assert.are.equal(1, assert(conn:query(sqls[1]))[1].v)
      assert.are.equal(2, assert(conn:query(sqls[2], 2))[1].v)
      assert.are.equal(1, assert(conn:query(sqls[3]))[1].a)
      local by_sql, n = prepared()
      assert.are.equal(3, n)
      for _, sql in ipairs(sqls) do assert.are.equal(1, by_sql[sql]) end
    end)

    it('returns 0A000 for a stale plan inside a transaction; after rollback the next query works'
        .. with_timeout, function()
      open(10, nil, query_timeout)
      assert(conn:query(SELECT_ALL))
      helpers.psql('alter table statement_cache_spec_t add column b int default 7')
      assert(conn:exec('begin'))
      local res, msg, code = conn:query(SELECT_ALL)
      assert.is_nil(res)
      assert.are.equal('0A000', code, msg)
      assert(conn:exec('rollback'))
      res = assert(conn:query(SELECT_ALL))
      assert.are.equal(7, res[1].b)
    end)
  end

  it('returns 26000 for a deallocated statement inside a transaction; after rollback the next query works', function()
    open(10)
    assert(conn:query(SELECT_ALL))
    assert(conn:exec('deallocate all'))
    assert(conn:exec('begin'))
    local res, msg, code = conn:query(SELECT_ALL)
    assert.is_nil(res)
    assert.are.equal('26000', code, msg)
    assert(conn:exec('rollback'))
    assert.are.equal(1, assert(conn:query(SELECT_ALL))[1].a)
  end)

  it('returns 0A000 inside pool:transaction, rolled back, and the connection is usable afterwards', function()
    open(10)
    assert(conn:query(SELECT_ALL))
    conn:release()
    conn = nil
    helpers.psql('alter table statement_cache_spec_t add column b int default 7')
    local ok, msg, code = pool:transaction(function(c) return c:query(SELECT_ALL) end)
    assert.is_nil(ok)
    assert.are.equal('0A000', code, msg)
    assert.are.equal(7, assert(pool:query(SELECT_ALL))[1].b)
  end)

  -- A stale statement dropped inside a (failed) transaction is deallocated
  -- once the transaction has ended.
  it('leaves no orphaned prepared statement behind after a stale plan inside a transaction', function()
    open(2)
    assert(conn:query(SELECT_ALL))
    helpers.psql('alter table statement_cache_spec_t add column b int default 7')
    assert(conn:exec('begin'))
    assert.is_nil((conn:query(SELECT_ALL)))
    assert(conn:exec('rollback'))
    assert(conn:query(SELECT_ALL))
    local res = assert(conn:query('select count(*)::int as n from pg_prepared_statements where statement = $1',
      SELECT_ALL))
    assert.are.equal(1, res[1].n, 'prepared statements for the same SQL on the server')
    assert.is_true(total_prepared() <= 2, 'more than statement_cache = 2 statements on the server')
  end)
end)

describe('statement_cache inside transactions', function()
  -- Statements evicted inside a transaction block are deallocated once it
  -- has ended.
  it('never keeps more than N statements on the server, even when they were evicted inside a transaction', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    open(2)
    assert(conn:exec('begin'))
    for i = 1, 6 do assert(conn:query('select ' .. i .. ' as v')) end
    assert(conn:exec('commit'))
    local total = total_prepared()
    assert.is_true(total <= 2, total .. ' prepared statements on the server with statement_cache = 2')
  end)

  it('never keeps more than N statements on the server after pool:transaction with many statements', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    open(3)
    conn:release()
    conn = nil
    assert(pool:transaction(function(c)
      for i = 1, 10 do assert(c:query('select $1::int + ' .. i .. ' as v', i)) end
    end))
    conn = assert(pool:acquire())
    local total = total_prepared()
    assert.is_true(total <= 3, total .. ' prepared statements on the server with statement_cache = 3')
  end)
end)

describe('statement_cache = 0', function()
  it('creates no prepared statements at all', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    open(0)
    for i = 1, 5 do
      assert(conn:query('select $1::int as v', i))
      assert(conn:query('select ' .. i .. ' as v'))
    end
    local res = assert(conn:query('select count(*)::int as n from pg_prepared_statements'))
    assert.are.equal(0, res[1].n)
  end)

  it('is the default', function()
    if SESSION_VIEW then return pending(SESSION_VIEW) end
    pool = pgpool.configure{ name = 'statement_cache_spec_default', conninfo = helpers.dsn(), max = 1, log_level = 'warn' }
    conn = assert(pool:acquire())
    for _ = 1, 3 do assert(conn:query('select 1 as v')) end
    local res = assert(conn:query('select count(*)::int as n from pg_prepared_statements'))
    assert.are.equal(0, res[1].n)
  end)
end)
