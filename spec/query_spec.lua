-- Queries: values in both directions, results, scripts, SQL errors,
-- connection errors and password redaction.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts, contains = helpers.pool_options, helpers.contains

local null = pgpool.null
local IS_54 = _VERSION == 'Lua 5.4'
local HAS_INTEGERS = math.type ~= nil

-- Through PgBouncer (transaction mode) a temporary table lives on one of
-- its server connections, and the next statement may run on another: the
-- specs' tables are then ordinary ones, dropped first and after.
local TEMP = helpers.via_pgbouncer() and '' or 'temp '

local pool, conn

before_each(function()
  helpers.capture_log(pgpool)
  pool = pgpool.configure(opts('query', { max = 2 }))
  conn = assert(pool:acquire())
end)

after_each(function()
  if conn then conn:release() end
  conn = nil
  pgpool.shutdown_all{ timeout = 1 }
  pgpool.on_log(nil)
end)

local unpack = table.unpack or unpack

local function one(sql, ...)
  local res, msg = conn:query(sql, ...)
  assert(res, msg)
  assert.are.equal(1, #res)
  return res[1]
end

describe('values from PostgreSQL', function()
  it('turns NULL into pgpool.null with the column key present', function()
    local row = one('select null::int as n, 1 as one')
    assert.are.equal(null, row.n)
    assert.are.equal(null, rawget(row, 'n'))
    local keys = 0
    for _ in pairs(row) do keys = keys + 1 end
    assert.are.equal(2, keys)
    assert.are.equal('userdata', type(pgpool.null))
  end)

  it('turns bool into booleans', function()
    local row = one('select true as t, false as f')
    assert.is_true(row.t)
    assert.is_false(row.f)
  end)

  it('turns int2, int4 and oid into integers, limits included', function()
    local row = one([[select (-32768)::int2 as i2min, 32767::int2 as i2max,
      (-2147483648)::int4 as i4min, 2147483647::int4 as i4max, 4294967295::oid as omax, 0::oid as ozero]])
    assert.are.same({ -32768, 32767, -2147483648, 2147483647, 4294967295, 0 },
      { row.i2min, row.i2max, row.i4min, row.i4max, row.omax, row.ozero })
    if HAS_INTEGERS then
      for _, k in ipairs{ 'i2min', 'i2max', 'i4min', 'i4max', 'omax' } do
        assert.are.equal('integer', math.type(row[k]), k)
      end
    end
  end)

  it('turns int8 into integers on Lua 5.4, exact numbers or strings on LuaJIT', function()
    local row = one([[select (-9223372036854775808)::int8 as min, 9223372036854775807::int8 as max,
      9007199254740992::int8 as p53, (-9007199254740992)::int8 as m53, 9007199254740993::int8 as p53plus1,
      42::int8 as small]])
    if HAS_INTEGERS then
      assert.are.equal(math.mininteger, row.min)
      assert.are.equal(math.maxinteger, row.max)
      assert.are.equal('integer', math.type(row.min))
      assert.are.equal('integer', math.type(row.max))
      assert.are.equal(9007199254740993, row.p53plus1)
      assert.are.equal('integer', math.type(row.small))
    else
      assert.are.equal('-9223372036854775808', row.min)
      assert.are.equal('9223372036854775807', row.max)
      assert.are.equal('9007199254740993', row.p53plus1)
      assert.are.equal('number', type(row.p53))
    end
    assert.are.equal(2 ^ 53, row.p53)
    assert.are.equal(-(2 ^ 53), row.m53)
    assert.are.equal(42, row.small)
  end)

  it('turns float4 and float8 into numbers, -0, inf, -inf and nan included', function()
    local row = one([[select 1.5::float4 as f4, (-2.25)::float4 as f4neg, 0.1::float8 as tenth,
      '-0'::float8 as negzero, 'Infinity'::float8 as inf, '-Infinity'::float8 as ninf,
      'NaN'::float8 as nan, 1.7976931348623157e308::float8 as big, 'Infinity'::float4 as inf4]])
    assert.are.equal(1.5, row.f4)
    assert.are.equal(-2.25, row.f4neg)
    assert.are.equal(0.1, row.tenth)
    assert.are.equal(0, row.negzero)
    assert.are.equal(-math.huge, 1 / row.negzero)
    assert.are.equal(math.huge, row.inf)
    assert.are.equal(-math.huge, row.ninf)
    assert.are.equal('number', type(row.nan))
    assert.is_true(row.nan ~= row.nan)
    assert.are.equal(1.7976931348623157e308, row.big)
    assert.are.equal(math.huge, row.inf4)
  end)

  it('turns numeric into its exact text', function()
    local row = one([[select 12345678901234567890.000000001::numeric as n, 'NaN'::numeric as nan,
      (-0.5)::numeric as half]])
    assert.are.equal('12345678901234567890.000000001', row.n)
    assert.are.equal('NaN', row.nan)
    assert.are.equal('-0.5', row.half)
  end)

  it('returns text unchanged, the empty string and unicode included', function()
    local row = one([[select ''::text as empty, 'żółć € 😀'::text as uni, 'a''b"c\d'::text as quotes]])
    assert.are.equal('', row.empty)
    assert.are.equal('żółć € 😀', row.uni)
    assert.are.equal('a\'b"c\\d', row.quotes)
  end)

  it('returns bytea as raw bytes, NUL and 0xFF included', function()
    local row = one([[select '\x00ff41'::bytea as b, ''::bytea as empty]])
    assert.are.equal('\0\255A', row.b)
    assert.are.equal(3, #row.b)
    assert.are.equal('', row.empty)
  end)

  it('returns json, uuid and dates as strings', function()
    local row = one([[select '{"a": [1, 2]}'::jsonb as j, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid as u,
      '2024-02-29'::date as d]])
    assert.are.equal('{"a": [1, 2]}', row.j)
    assert.are.equal('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', row.u)
    assert.are.equal('2024-02-29', row.d)
  end)

  it('turns arrays into Lua arrays with NULL elements as pgpool.null', function()
    local row = one([==[select array[1, null, 3]::int[] as a, array[['x', 'y'], ['z', null]]::text[] as m,
      '{}'::int[] as e]==])
    assert.are.same({ 1, null, 3 }, row.a)
    assert.are.same({ { 'x', 'y' }, { 'z', null } }, row.m)
    assert.are.same({}, row.e)
  end)
  it('decodes bytea in the escape output format too', function()
    assert.is_true(conn:exec("set bytea_output = 'escape'"))
    local row = one([[select '\x00ff5c41'::bytea as b]])
    assert.are.equal('\0\255\\A', row.b)
  end)

  it('decodes array elements exactly: quotes, backslashes, the string "NULL", bytea', function()
    local row = one([==[select array['a"b', 'c\d', '{x}', ' sp ', 'NULL', null, '']::text[] as t,
      array['\x00ff'::bytea] as b, array[true, false]::bool[] as bools,
      array['NaN', '-Infinity']::float8[] as f]==])
    assert.are.same({ 'a"b', 'c\\d', '{x}', ' sp ', 'NULL', null, '' }, row.t)
    assert.are.equal(7, #row.t)
    assert.are.same({ '\0\255' }, row.b)
    assert.are.same({ true, false }, row.bools)
    assert.is_true(row.f[1] ~= row.f[1])
    assert.are.equal(-math.huge, row.f[2])
  end)
end)

describe('parameters', function()
  it('binds nil and pgpool.null as NULL, trailing ones included', function()
    local row = one('select $1::int as a, $2::int as b', 1, nil)
    assert.are.equal(1, row.a)
    assert.are.equal(null, row.b)
    row = one('select $1::int as a, $2::int as b, $3::text is null as c_null', nil, null, nil)
    assert.are.same({ null, null, true }, { row.a, row.b, row.c_null })
  end)

  it('binds trailing nil through the module-level and pool-level query', function()
    local row = pool:query('select $1::int as a, $2::int as b', 7, nil)[1]
    assert.are.same({ 7, null }, { row.a, row.b })
  end)

  it('returns the server error 08P01 when fewer parameters than placeholders are given', function()
    local res, _, code = conn:query('select $1::int as a, $2::int as b', 1)
    assert.is_nil(res)
    assert.are.equal('08P01', code)    -- bind message supplies 1 parameter, needs 2
    assert.are.equal(1, one('select 1 as x').x)
  end)

  it('binds booleans', function()
    local row = one('select $1::bool as t, $2::bool as f, $1::text as txt', true, false)
    assert.is_true(row.t)
    assert.is_false(row.f)
    assert.are.equal('true', row.txt)
  end)

  it('binds integers exactly', function()
    local row = one('select $1::int4 as a, $2::int8 as b, $3::int8 as c', -2147483648, 2 ^ 53, -(2 ^ 53))
    assert.are.equal(-2147483648, row.a)
    assert.are.equal(2 ^ 53, row.b)
    assert.are.equal(-(2 ^ 53), row.c)
    if HAS_INTEGERS then
      row = one('select $1::int8 as min, $2::int8 as max', math.mininteger, math.maxinteger)
      assert.are.equal(math.mininteger, row.min)
      assert.are.equal(math.maxinteger, row.max)
    end
  end)

  it('binds floats so they read back exactly', function()
    local values = { 0.1, 1 / 3, 1e300, -1e-300, 2 ^ 60 + 2 ^ 8, 123456.789, 5e-324, 3.0 }
    for _, v in ipairs(values) do
      local back = one('select $1::float8 as v', v).v
      assert.are.equal(v, back, ('%.17g came back as %.17g'):format(v, back))
    end
    local z = one('select $1::float8 as v', -0.0).v
    assert.are.equal(-math.huge, 1 / z)
    assert.are.equal(math.huge, one('select $1::float8 as v', math.huge).v)
    assert.are.equal(-math.huge, one('select $1::float8 as v', -math.huge).v)
    local nan = one('select $1::float8 as v', 0 / 0).v
    assert.is_true(nan ~= nan)
  end)

  it('binds strings as text, never interpolated', function()
    local evil = "x'); drop table nope; --"
    local row = one('select $1::text as s, length($1::text) as n', evil)
    assert.are.equal(evil, row.s)
    assert.are.equal(#evil, row.n)
    assert.are.equal('żółć', one('select $1::text as s', 'żółć').s)
    assert.are.equal('', one('select $1::text as s', '').s)
  end)

  it('binds pgpool.bytea binary-safe', function()
    local bytes = '\0\255A\0\1\128'
    local row = one('select $1::bytea as b, length($1::bytea) as n', pgpool.bytea(bytes))
    assert.are.equal(bytes, row.b)
    assert.are.equal(#bytes, row.n)
  end)

  it('binds an array table as an array literal', function()
    local row = one('select $1::int[] as a, 2 = any($1::int[]) as has2, $2::text[] as t',
      { 1, 2, null, 4 }, { 'a,b', '"q"', '' })
    assert.are.same({ 1, 2, null, 4 }, row.a)
    assert.is_true(row.has2)
    assert.are.same({ 'a,b', '"q"', '' }, row.t)
  end)

  it('raises for a string with a NUL byte, naming the parameter', function()
    local ok, err = pcall(conn.query, conn, 'select $1::text, $2::text', 'fine', 'a\0b')
    assert.is_false(ok)
    assert.truthy(contains(err, 'parameter 2'), err)
    assert.truthy(contains(err, 'NUL'), err)
    assert.are.equal(1, one('select 1 as x').x)  -- the connection is still usable
  end)

  it('raises for an unsupported type, naming the parameter number and type', function()
    local ok, err = pcall(conn.query, conn, 'select $1, $2, $3', 1, 2, function() end)
    assert.is_false(ok)
    assert.truthy(contains(err, 'parameter 3'), err)
    assert.truthy(contains(err, 'function'), err)
    ok, err = pcall(conn.query, conn, 'select $1', coroutine.create(function() end))
    assert.is_false(ok)
    assert.truthy(contains(err, 'parameter 1'), err)
    assert.truthy(contains(err, 'thread'), err)
  end)

  it('raises for a bad parameter on pool:query without checking anything out', function()
    local ok = pcall(pool.query, pool, 'select $1', function() end)
    assert.is_false(ok)
    assert.are.equal(1, pool:stats().in_use)   -- only our own conn
  end)
end)

describe('many parameters and columns', function()
  it('round-trips 40 parameters into 40 columns', function()
    local cols, args = {}, {}
    for i = 1, 40 do
      cols[i] = ('$%d::int as c%d'):format(i, i)
      args[i] = i * 1000 + i
    end
    args[40] = nil   -- a trailing NULL among many
    local res = assert(conn:query('select ' .. table.concat(cols, ', '), unpack(args, 1, 40)))
    assert.are.equal(40, #res.columns)
    for i = 1, 39 do assert.are.equal(i * 1000 + i, res[1]['c' .. i]) end
    assert.are.equal(null, res[1].c40)
  end)
end)

describe('results', function()
  before_each(function()
    assert.is_true(conn:exec('drop table if exists r; create ' .. TEMP .. 'table r(id int primary key, v text)'))
  end)
  teardown(function() helpers.psql('drop table if exists r') end)

  it('lists res.columns in select order', function()
    local res = assert(conn:query('select 1 as b, 2 as a, 3 as c, 4 as "Z z"'))
    assert.are.same({ 'b', 'a', 'c', 'Z z' }, res.columns)
    assert.are.equal(4, res[1]['Z z'])
  end)

  it('reports command and affected rows for insert, update, delete and select', function()
    local res = assert(conn:query("insert into r values (1, 'a'), (2, 'b'), (3, 'c')"))
    assert.are.equal('INSERT', res.command)
    assert.are.equal(3, res.affected)
    assert.are.equal(0, #res)
    res = assert(conn:query("update r set v = 'x' where id >= $1", 2))
    assert.are.equal('UPDATE', res.command)
    assert.are.equal(2, res.affected)
    res = assert(conn:query('delete from r where id = 1'))
    assert.are.equal('DELETE', res.command)
    assert.are.equal(1, res.affected)
    res = assert(conn:query('select id, v from r order by id'))
    assert.are.equal('SELECT', res.command)
    assert.are.equal(2, #res)
    assert.are.same({ id = 2, v = 'x' }, res[1])
    assert.are.same({ id = 3, v = 'x' }, res[2])
    res = assert(conn:query('insert into r values (9, $1) returning id, v', 'nine'))
    assert.are.equal('INSERT', res.command)
    assert.are.same({ id = 9, v = 'nine' }, res[1])
  end)

  it('returns columns and zero rows for an empty result', function()
    local res = assert(conn:query('select id, v from r where false'))
    assert.are.equal(0, #res)
    assert.are.same({ 'id', 'v' }, res.columns)
    assert.are.equal('SELECT', res.command)
  end)

  it('returns an empty result with no rows and no columns for an empty query', function()
    local res = assert(conn:query(''))
    assert.are.equal(0, #res)
    assert.are.same({}, res.columns)
  end)

  it('gives plain tables only from pool:query', function()
    local res = assert(pool:query('select 1 as a, null::text as b'))
    assert.is_nil(getmetatable(res))
    assert.is_nil(getmetatable(res[1]))
    assert.is_nil(getmetatable(res.columns))
  end)
end)

describe('exec', function()
  it('runs a script of several statements and returns true', function()
    assert.is_true(conn:exec('drop table if exists s; create ' .. TEMP .. [[table s(a int);
      insert into s values (1);
      insert into s values (2);
    ]]))
    assert.are.equal(2, one('select count(*) as n from s').n)
    helpers.psql('drop table if exists s')
  end)

  it('returns nil, msg, code for an error in a script and stays usable', function()
    local ok, msg, code = conn:exec('select 1; select * from no_such_table; select 2')
    assert.is_nil(ok)
    assert.are.equal('42P01', code)
    assert.truthy(contains(msg, 'no_such_table'), msg)
    assert.are.equal(1, one('select 1 as x').x)
  end)

  it('raises when given parameters', function()
    local ok, err = pcall(conn.exec, conn, 'select $1', 1)
    assert.is_false(ok)
    assert.truthy(contains(err, 'exec takes no parameters'), err)
  end)

  it('runs through pool:exec', function()
    assert.is_true(pool:exec('select 1; select 2'))
    local ok, _, code = pool:exec('select 1/0')
    assert.is_nil(ok)
    assert.are.equal('22012', code)
  end)
end)

describe('COPY', function()
  it('refuses COPY with code "unsupported" and keeps the connection, idle, for reuse', function()
    local pid = conn:backend_pid()
    local res, msg, code = conn:query('copy (select generate_series(1, 1000)) to stdout')
    assert.is_nil(res)
    assert.are.equal('unsupported', code)
    assert.truthy(contains(msg, 'COPY'), msg)
    conn:release()
    local st = pool:stats()
    assert.are.equal(1, st.total)
    assert.are.equal(0, st.closed_broken)
    conn = assert(pool:acquire())
    assert.are.equal(pid, conn:backend_pid())
    assert.are.equal(1, one('select 1 as x').x)
  end)
end)

describe('SQL errors', function()
  it('returns 42P01 for a missing table, without the ERROR: prefix', function()
    local res, msg, code, info = conn:query('select * from no_such_table')
    assert.is_nil(res)
    assert.are.equal('42P01', code)
    assert.are.equal('relation "no_such_table" does not exist', msg)
    assert.is_nil(msg:find('ERROR', 1, true))
    assert.are.equal('ERROR', info.severity)
    assert.are.equal(15, info.position)
    assert.are.equal(1, one('select 1 as x').x)
  end)

  it('returns 23505 with the constraint, table and detail for a unique violation', function()
    assert.is_true(conn:exec('drop table if exists u; create ' .. TEMP .. 'table u(id int primary key)'))
    assert.truthy(conn:query('insert into u values (1)'))
    local res, msg, code, info = conn:query('insert into u values ($1)', 1)
    assert.is_nil(res)
    assert.are.equal('23505', code)
    assert.truthy(contains(msg, 'duplicate key'), msg)
    assert.are.equal('u_pkey', info.constraint)
    assert.are.equal('u', info.table)
    assert.truthy(contains(info.detail, 'Key (id)=(1) already exists'), info.detail)
    assert.matches(TEMP ~= '' and '^pg_temp' or '^public$', info.schema)
    assert.are.equal(1, one('select count(*) as n from u').n)
    helpers.psql('drop table if exists u')
  end)

  it('returns 22012 for a division by zero and stays usable', function()
    local res, msg, code, info = conn:query('select 1/0')
    assert.is_nil(res)
    assert.are.equal('22012', code)
    assert.are.equal('division by zero', msg)
    assert.are.equal('ERROR', info.severity)
    assert.are.equal(2, one('select 2 as x').x)
  end)

  it('returns 42601 with info.position for a syntax error', function()
    local res, msg, code, info = conn:query('select from from')
    assert.is_nil(res)
    assert.are.equal('42601', code)
    assert.truthy(contains(msg, 'syntax error'), msg)
    assert.are.equal(13, info.position)
    assert.are.equal('number', type(info.position))
  end)

  it('counts failed queries in stats().query_errors', function()
    conn:query('select 1/0')
    conn:query('select 1')
    local st = pool:stats()
    assert.are.equal(1, st.query_errors)
    assert.are.equal(2, st.queries)
  end)

  it('cancels a query past query_timeout with code "timeout" and keeps the connection', function()
    local p = pgpool.configure(opts('query-timeout', { query_timeout = 0.2, max = 1 }))
    local c = assert(p:acquire())
    local pid = c:backend_pid()
    local t0 = helpers.now()
    local res, msg, code = c:query('select pg_sleep(3)')
    assert.is_true(helpers.now() - t0 < 1.5)
    assert.is_nil(res)
    assert.are.equal('timeout', code)
    assert.truthy(contains(msg, 'timeout'), msg)
    assert.are.equal(1, c:query('select 1 as x')[1].x)
    assert.are.equal(pid, c:backend_pid())
    c:release()
  end)
end)

describe('transaction / with', function()
  before_each(function()
    assert.is_true(pool:exec('drop table if exists tx_t; create table tx_t(a int)'))
  end)
  after_each(function()
    helpers.psql('drop table if exists tx_t')
  end)

  it('commits and returns the function results', function()
    local a, b = pool:transaction(function(c)
      assert(c:query('insert into tx_t values (1)'))
      return 'done', 2
    end)
    assert.are.equal('done', a)
    assert.are.equal(2, b)
    assert.are.equal('1', helpers.psql('select count(*) from tx_t'))
    assert.are.equal(1, pool:stats().in_use)   -- only the spec's own conn
  end)

  it('rolls back and returns nil, msg when the function raises', function()
    local ok, msg = pool:transaction(function(c)
      assert(c:query('insert into tx_t values (1)'))
      error('boom')
    end)
    assert.is_nil(ok)
    assert.truthy(contains(msg, 'boom'), msg)
    assert.are.equal('0', helpers.psql('select count(*) from tx_t'))
    assert.are.equal(1, pool:stats().in_use)
  end)

  it('rolls back when the function returns nil, msg', function()
    local ok, msg = pool:transaction(function(c)
      assert(c:query('insert into tx_t values (1)'))
      return nil, 'changed my mind'
    end)
    assert.is_nil(ok)
    assert.are.equal('changed my mind', msg)
    assert.are.equal('0', helpers.psql('select count(*) from tx_t'))
  end)

  it('reports a failed statement inside as a failure, not a commit', function()
    local ok, _, code = pool:transaction(function(c)
      assert(c:query('insert into tx_t values (1)'))
      c:query('select 1/0')
      return true
    end)
    assert.is_nil(ok)
    assert.are.equal('25P02', code)
    assert.are.equal('0', helpers.psql('select count(*) from tx_t'))
  end)

  it('applies the isolation option', function()
    local level = pool:transaction(function(c)
      return c:query('show transaction_isolation')[1].transaction_isolation
    end, { isolation = 'serializable' })
    assert.are.equal('serializable', level)
  end)

  it('raises for a nested transaction in the same coroutine', function()
    local ok, msg = pool:transaction(function()
      pool:transaction(function() end)
    end)
    assert.is_nil(ok)
    assert.truthy(contains(msg, 'nested'), msg)
  end)

  it('with releases the connection and re-raises errors', function()
    local ok, err = pcall(pool.with, pool, function(c)
      assert(c:query('select 1'))
      error('inside with')
    end)
    assert.is_false(ok)
    assert.truthy(contains(err, 'inside with'), err)
    assert.are.equal(1, pool:stats().in_use)
    assert.are.equal(3, pool:with(function(c) return c:query('select 3 as x')[1].x end))
  end)
end)

describe('connection errors', function()
  local cases = {
    { 'a refused TCP port', 'host=127.0.0.1 port=1 dbname=x user=x connect_timeout=5' },
    { 'a missing socket directory', 'host=/nonexistent dbname=x user=x connect_timeout=5' },
  }
  for i, case in ipairs(cases) do
    it('returns code "connect" promptly with nothing counted open for ' .. case[1], function()
      local p = pgpool.configure{ name = 'bad-' .. i, conninfo = case[2], log_level = 'off' }
      local t0 = helpers.now()
      local c, msg, code = p:acquire{ timeout = 5 }
      assert.is_true(helpers.now() - t0 < 2)
      assert.is_nil(c)
      assert.are.equal('connect', code)
      assert.truthy(#msg > 10, msg)
      assert.truthy(msg:find('connection to server', 1, true) or msg:find('could not connect', 1, true), msg)
      local st = p:stats()
      assert.are.equal(0, st.total)
      assert.are.equal(1, st.connect_errors)
      assert.are.equal(0, st.created)
      assert.are.equal(0, st.acquired)   -- a failed acquire is no checkout
    end)
  end

  it('gives the slot back after each failed connect (max = 1: no timeouts)', function()
    local p = pgpool.configure{ name = 'bad-then-ok', conninfo = 'host=127.0.0.1 port=1 dbname=x', max = 1,
      log_level = 'off' }
    for _ = 1, 3 do
      local c, _, code = p:acquire{ timeout = 1 }
      assert.is_nil(c)
      assert.are.equal('connect', code)
    end
    -- the first call's attempt failed; the next two, arriving within the
    -- backoff step, got its error at once (spec/storm_spec.lua)
    local st = p:stats()
    assert.are.equal(st.connect_attempts, st.connect_errors)
    assert.is_true(st.connect_errors >= 1)
    assert.are.equal(0, st.total)
    assert.are.equal(0, st.timeouts)
  end)
end)

describe('passwords', function()
  local password = os.getenv('PGPOOL_TEST_PASSWORD')
  local WRONG = 'Wr0ng-Pa55w0rd'

  local function plain_replace(s, old, new)
    local i, j = s:find(old, 1, true)
    assert(i, old .. ' not in ' .. s)
    return s:sub(1, i - 1) .. new .. s:sub(j + 1)
  end

  local function assert_secret_free(text, what)
    assert.is_nil(tostring(text):find(password, 1, true), what .. ' contains the password: ' .. tostring(text))
    assert.is_nil(tostring(text):find(WRONG, 1, true), what .. ' contains the wrong password: ' .. tostring(text))
  end

  local function try(name, conninfo)
    local lines = helpers.capture_log(pgpool)
    local p = pgpool.configure{ name = name, conninfo = conninfo, log_level = 'debug' }
    local c, msg, code = p:acquire{ timeout = 3 }
    if c then c:release() end
    assert.is_nil(c, 'connected with ' .. name)
    assert.are.equal('connect', code)
    assert_secret_free(msg, 'the error message')
    assert_secret_free(tostring(p), 'tostring(pool)')
    p:stats()   -- delivers the log lines
    for _, l in ipairs(lines) do assert_secret_free(l.message, 'a log line') end
    return msg
  end

  it('connects with the test password URL (sanity)', function()
    local p = pgpool.configure{ name = 'pw-ok', conninfo = helpers.pw_url(), log_level = 'off' }
    assert.are.equal('pgpool_pw', p:query('select current_user as u')[1].u)
  end)

  it('keeps the password out of the message for a wrong database', function()
    local msg = try('pw-db', plain_replace(helpers.pw_url(), '/pgpool_test', '/no_such_db'))
    assert.truthy(contains(msg, 'no_such_db'), msg)
  end)

  it('keeps the password out of the message for a wrong password', function()
    local msg = try('pw-wrong', plain_replace(helpers.pw_url(), password, WRONG))
    -- PgBouncer checks the password itself, in its own words
    local says = helpers.via_pgbouncer() and 'SASL authentication failed' or 'password authentication failed'
    assert.truthy(contains(msg, says), msg)
  end)

  -- libpq quotes the whole URI when it cannot parse it (PQpass() is empty
  -- then): pq.c finds the password in the string itself.
  it('keeps the password out of the message for a malformed URI', function()
    try('pw-malformed', plain_replace(helpers.pw_url(), '@127.0.0.1', '@[127.0.0.1'))
  end)
end)
