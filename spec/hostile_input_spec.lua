-- Hostile input: what a caller, or a value pgpool did not expect, can hand
-- it, and what pgpool does with it. Never wrong, never vague:
--
--   * the codec's type tables agree with the server's pg_type;
--   * a value the codec cannot read exactly stays its text or is refused,
--     never turned into another number;
--   * a string that C would cut at a NUL byte is refused, not cut, and
--     nothing is sent;
--   * a value C reads after converting it is refused where a string is
--     required (a pointer into a converted string, used after its value
--     left the stack, shows only under AddressSanitizer; here the same
--     inputs must give a clean raise, or the right statement run);
--   * misuse raises "bad argument #n to '<function as called>' (...)" at
--     the caller's line.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local core = require 'pgpool.core'
local values = require 'spec.support.values'

local null = pgpool.null
local bytea = pgpool.bytea
local contains = helpers.contains
local HAS_INTEGERS, int8, check, show = values.HAS_INTEGERS, values.int8, values.check, values.show

local TABLE = 'hostile_input_rows'
local SPEC_FILE = 'hostile_input_spec.lua'

local pool, conn

-- Three rows, recreated before each spec: a statement cut at a NUL byte
-- ("DELETE FROM t\0 WHERE id = 1") would delete all of them.
local function reset_rows()
  helpers.psql(('drop table if exists %s; create table %s (id int); insert into %s values (1), (2), (3)')
    :format(TABLE, TABLE, TABLE))
end

local function row_count()
  return tonumber(helpers.psql('select count(*) from ' .. TABLE))
end

setup(function()
  pool = pgpool.configure(helpers.pool_options('hostile_input_spec', { max = 3 }))
  pgpool.configure(helpers.pool_options('default', { max = 2 }))
end)

teardown(function()
  pgpool.shutdown_all{ timeout = 1 }
  helpers.psql('drop table if exists ' .. TABLE)
end)

before_each(function()
  reset_rows()
  conn = assert(pool:acquire())
end)

after_each(function()
  if conn then conn:release() end
  conn = nil
end)

-- Calls fn, which must raise; returns the message.
local function raises(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, 'expected an error')
  return tostring(err)
end

-- The error says "bad argument #arg to 'name' (...)", mentions text, and
-- points at this file (the caller's line), not at pgpool's own code. (The
-- calls below are not tail calls: a tail call leaves no line to point at.)
local function assert_argerror(err, name, arg, text)
  local head = ("bad argument #%d to '%s' ("):format(arg, name)
  assert.truthy(contains(err, head), ('expected %q in: %s'):format(head, err))
  if text then assert.truthy(contains(err, text), ('expected %q in: %s'):format(text, err)) end
  assert.truthy(contains(err, SPEC_FILE .. ':'), 'the error should point at the caller: ' .. err)
end

-- NUL bytes ------------------------------------------------------------------

describe('SQL holding a NUL byte', function()
  local DELETE = 'DELETE FROM ' .. TABLE .. '\0 WHERE id = 1'

  -- { how it is called, call, name in the error, argument number }
  local CALLS = {
    { 'pool:query', function() pool:query(DELETE) end, 'pool:query', 1 },
    { 'pool:exec', function() pool:exec(DELETE) end, 'pool:exec', 1 },
    { 'conn:query', function() conn:query(DELETE) end, 'conn:query', 1 },
    { 'conn:exec', function() conn:exec(DELETE) end, 'conn:exec', 1 },
    { 'pgpool.query', function() pgpool.query(DELETE) end, 'pgpool.query', 1 },
    { 'pgpool.exec', function() pgpool.exec(DELETE) end, 'pgpool.exec', 1 },
    { 'a conn:pipeline statement', function()
        conn:pipeline(function(p) p:query('select 1') p:query(DELETE) end)
      end, 'p:query', 1 },
    { 'a conn:pipeline statement, isolated', function()
        conn:pipeline(function(p) p:query(DELETE) end, { isolate = true })
      end, 'p:query', 1 },
    { 'conn:run_pipeline', function() conn:run_pipeline({ { 'select 1', n = 0 }, { DELETE, n = 0 } }) end,
      'conn:run_pipeline', 1 },
  }
  for _, case in ipairs(CALLS) do
    it(('is refused by %s, naming it, and nothing is sent (the rows are still there)'):format(case[1]), function()
      local queries = pool:stats().queries
      local err = raises(case[2])
      assert_argerror(err, case[3], case[4], 'NUL')
      assert.are.equal(3, row_count())
      assert.are.equal(queries, pool:stats().queries)
      assert.are.equal(1, assert(conn:query('select 1 as v'))[1].v)
    end)
  end

  it('is refused even when the NUL byte is the first byte or the last', function()
    assert_argerror(raises(function() conn:query('\0select 1') end), 'conn:query', 1, 'NUL')
    assert_argerror(raises(function() conn:exec('select 1\0') end), 'conn:exec', 1, 'NUL')
  end)
end)

describe('escape_literal and escape_identifier', function()
  it('refuse a string with a NUL byte instead of quoting what comes before it', function()
    assert_argerror(raises(function() conn:escape_literal('abc\0def') end),
      'conn:escape_literal', 1, 'NUL')
    assert_argerror(raises(function() conn:escape_identifier('col\0umn') end),
      'conn:escape_identifier', 1, 'NUL')
    assert.are.equal("'abcdef'", conn:escape_literal('abcdef'))
  end)

  it('refuse a value that is not a string', function()
    assert_argerror(raises(function() conn:escape_literal(nil) end), 'conn:escape_literal', 1, 'nil')
    assert_argerror(raises(function() conn:escape_identifier({}) end), 'conn:escape_identifier', 1, 'table')
  end)
end)

describe('parameters holding a NUL byte', function()
  it('raise for a text parameter (PostgreSQL text cannot hold NUL), and nothing is sent', function()
    local queries = pool:stats().queries
    local err = raises(function()
      conn:query('delete from ' .. TABLE .. ' where id::text = $1', '1\0')
    end)
    assert_argerror(err, 'conn:query', 2, 'parameter 1')
    assert.truthy(contains(err, 'NUL'), err)
    assert.are.equal(3, row_count())
    assert.are.equal(queries, pool:stats().queries)
  end)

  it('are sent whole in a pgpool.bytea value', function()
    local v = assert(conn:query('select $1::bytea as v, octet_length($1::bytea) as n', bytea('a\0b\0')))[1]
    assert.are.equal('a\0b\0', v.v)
    assert.are.equal(4, v.n)
  end)
end)

describe('option strings that reach C', function()
  local function configure_error(extra)
    local o = helpers.pool_options('hostile_nul', extra)
    return raises(function() pgpool.configure(o) end)
  end

  for _, key in ipairs{ 'name', 'conninfo', 'log_level' } do
    it(('refuse a NUL byte in %s, naming the option'):format(key), function()
      local value = key == 'conninfo' and helpers.dsn() .. '\0 host=elsewhere'
        or key == 'log_level' and 'warn\0' or 'hostile\0nul'
      local err = configure_error{ [key] = value }
      assert_argerror(err, 'pgpool.configure', 1, ("option '%s'"):format(key))
      assert.is_nil(pgpool.pool('hostile'))
      assert.is_nil(pgpool.pool('hostile_nul'))
    end)
  end

  it('refuse a NUL byte in a replicas entry, naming the option and the entry', function()
    local err = configure_error{ replicas = { helpers.dsn(), helpers.dsn() .. '\0 port=1' } }
    assert_argerror(err, 'pgpool.configure', 1, "option 'replicas'")
    assert.truthy(contains(err, 'entry 2'), err)
    assert.is_nil(pgpool.pool('hostile_nul'))
  end)

  it('refuse a pool name with a NUL byte in pgpool.pool', function()
    assert_argerror(raises(function() pgpool.pool('hostile_input_spec\0') end), 'pgpool.pool', 1, 'NUL')
    assert.truthy(pgpool.pool('hostile_input_spec'))
  end)
end)

-- Values C reads after converting them ----------------------------------------

describe('values C reads after converting them', function()
  it('refuses pipeline SQL given as a number rather than running some other statement', function()
    local err = raises(function() conn:run_pipeline({ { 1234567, n = 0 } }) end)
    assert_argerror(err, 'conn:run_pipeline', 1, 'statement 1: sql must be a string, got number')
    local results = conn:run_pipeline({ { 'select 1234567 as v', n = 0 } })
    assert.are.equal(1234567, results[1][1].v)
  end)

  it('refuses a pgpool.bytea marker whose value was replaced by a number, as a parameter and in an array', function()
    local b = bytea('abc')
    b[1] = 1234567.5
    assert_argerror(raises(function() conn:query('select $1::bytea as v', b) end),
      'conn:query', 2, 'parameter 1')
    local err = raises(function() conn:query('select $1::bytea[] as v', { bytea('x'), b }) end)
    assert_argerror(err, 'conn:query', 2, 'parameter 1')
    assert.truthy(contains(err, 'pgpool.bytea'), err)
    assert.are.equal('abc', assert(conn:query('select $1::bytea as v', bytea('abc')))[1].v)
  end)

  local FULL = {
    conninfo = nil, max = 2, min = 0, idle_timeout = 30, acquire_timeout = 5, connect_timeout = 5,
    query_timeout = 0, max_lifetime = 0, max_waiting = 0, statement_cache = 0, max_shared = 0,
    slow_query = 0, leak_timeout = 0, log_level = 'warn',
    health = { window = 10, waiting_ratio = 0.5, wait_p95 = 0.5, timeouts = 1, connect_failures = 3 },
  }
  local function core_options(extra)
    local o = { name = 'hostile_core', conninfo = helpers.dsn() }
    for k, v in pairs(FULL) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return o
  end

  for _, key in ipairs{ 'name', 'conninfo', 'log_level' } do
    it(('refuses a number as %s in core.configure ("must be a string")'):format(key), function()
      local err = raises(function() core.configure(core_options{ [key] = 1234567 }) end)
      assert.truthy(contains(err, ("option '%s' must be a string"):format(key)), err)
      assert.is_nil(pgpool.pool('1234567'))
      assert.is_nil(pgpool.pool('hostile_core'))
    end)
  end

  it('refuses a number as a replicas entry in core.configure', function()
    local err = raises(function() core.configure(core_options{ replicas = { 1234567 } }) end)
    assert.truthy(contains(err, "option 'replicas' entry 1 must be a string"), err)
    assert.is_nil(pgpool.pool('hostile_core'))
  end)

  it('refuses impossible health thresholds in core.configure (NaN, negative, huge, missing)', function()
    for _, bad in ipairs{ { window = 0 / 0 }, { window = 301 }, { window = 0 }, { wait_p95 = -1 },
        { waiting_ratio = 2 }, { timeouts = math.huge }, { connect_failures = '3' } } do
      local health = {}
      for k, v in pairs(FULL.health) do health[k] = v end
      for k, v in pairs(bad) do health[k] = v end
      local err = raises(function() core.configure(core_options{ health = health }) end)
      assert.truthy(contains(err, 'invalid options'), err)
    end
    local err = raises(function() core.configure(core_options{ health = false }) end)
    assert.truthy(contains(err, 'invalid options'), err)
    assert.is_nil(pgpool.pool('hostile_core'))
  end)

  it('reads core.configure options raw: an __index metamethod is not consulted', function()
    local o = core_options{}
    o.name = nil
    setmetatable(o, { __index = function(_, key)
      if key == 'name' then return 'hostile_core_' .. ('n'):rep(50) end
    end })
    local err = raises(function() core.configure(o) end)
    assert.truthy(contains(err, "option 'name' must be a string, got nil"), err)
  end)
end)

-- The codec's type tables against pg_type --------------------------------------

describe("the codec's type tables", function()
  local tables = core._type_table()

  local function pg_types(oids)
    local res = assert(conn:query([[select oid::int8 as oid, typname::text as name, typelem::int8 as elem,
      typarray::int8 as arr from pg_type where oid = any($1::oid[])]], oids))
    local by_oid = {}
    for _, row in ipairs(res) do by_oid[tonumber(row.oid)] = row end
    return by_oid
  end

  it('lists the array types and the scalar types it converts', function()
    assert.is_true(#tables.arrays >= 29)
    assert.is_true(#tables.scalars >= 8)
  end)

  it('maps every array OID to the element the server says (typelem), and back (typarray)', function()
    local oids = {}
    for _, t in ipairs(tables.arrays) do
      oids[#oids + 1] = t.array
      oids[#oids + 1] = t.element
    end
    local pg = pg_types(oids)
    for _, t in ipairs(tables.arrays) do
      local arr, elem = pg[t.array], pg[t.element]
      assert(arr, ('array OID %d (%s[]) is not in pg_type'):format(t.array, t.name))
      assert(elem, ('element OID %d (%s) is not in pg_type'):format(t.element, t.name))
      assert.are.equal(t.name, elem.name, ('element OID %d'):format(t.element))
      assert.are.equal(t.element, tonumber(arr.elem), ('typelem of %d (%s)'):format(t.array, arr.name))
      assert.are.equal(t.array, tonumber(elem.arr), ('typarray of %d (%s)'):format(t.element, elem.name))
      assert.are.equal('_' .. t.name, arr.name)
    end
  end)

  it('names every scalar OID as pg_type does', function()
    local oids = {}
    for _, t in ipairs(tables.scalars) do oids[#oids + 1] = t.oid end
    local pg = pg_types(oids)
    for _, t in ipairs(tables.scalars) do
      assert(pg[t.oid], ('OID %d (%s) is not in pg_type'):format(t.oid, t.name))
      assert.are.equal(t.name, pg[t.oid].name, ('OID %d'):format(t.oid))
    end
  end)

  it('decodes an empty array of every array type it lists', function()
    for _, t in ipairs(tables.arrays) do
      local res, msg = conn:query(('select \'{}\'::%s[] as v'):format(t.name == 'char' and '"char"' or t.name))
      assert(res, t.name .. ': ' .. tostring(msg))
      check({}, res[1].v, nil, t.name .. '[]')
    end
  end)

  it('decodes a refcursor as its name and refcursor[] as an array of names', function()
    check('c1', assert(conn:query("select 'c1'::refcursor as v"))[1].v)
    check({ 'c1', null }, assert(conn:query("select array['c1'::refcursor, null] as v"))[1].v)
  end)
end)

-- Integer and bytea text the codec cannot read exactly ------------------------

describe('decoding integer text', function()
  local decode, decode_array = core._decode, core._decode_array
  local INT2, INT4, INT8, OID = 21, 23, 20, 26
  local INT8_ARRAY, INT4_ARRAY = 1016, 1007

  it('keeps int8 text beyond the 64-bit range as its text, never another number', function()
    check({ '99999999999999999999' }, decode_array('{99999999999999999999}', INT8_ARRAY))
    check({ '9223372036854775808', '-9223372036854775809' },
      decode_array('{9223372036854775808,-9223372036854775809}', INT8_ARRAY))
    check('9223372036854775808', decode('9223372036854775808', INT8))
    check('-99999999999999999999999999', decode('-99999999999999999999999999', INT8))
  end)

  it('decodes the int8 extremes exactly', function()
    check(int8('9223372036854775807', 'string'), decode('9223372036854775807', INT8), 'integer')
    check(int8('-9223372036854775808', 'string'), decode('-9223372036854775808', INT8), 'integer')
    check({ int8('-9223372036854775808', 'string'), int8('9223372036854775807', 'string') },
      decode_array('{-9223372036854775808,9223372036854775807}', INT8_ARRAY), 'integer')
  end)

  it('keeps text that is not a plain decimal integer as its text', function()
    for _, text in ipairs{ '', '-', '+', '12abc', '1 2', '0x10', '--1', ' 1' } do
      check(text, decode(text, INT4), nil, ('int4 %q'):format(text))
      check(text, decode(text, INT8), nil, ('int8 %q'):format(text))
    end
    check({ '12abc' }, decode_array('{12abc}', INT4_ARRAY))
  end)

  it('decodes in-range integers of every integer type as integers', function()
    check(-32768, decode('-32768', INT2), 'integer')
    check(2147483647, decode('2147483647', INT4), 'integer')
    check(4294967295, decode('4294967295', OID), 'integer')
    check(int8('0', 'number'), decode('-0', INT8), 'integer')
    check(int8('7', 'number'), decode('+007', INT8), 'integer')
  end)

  it('gets -9223372036854775808::int8 from the server exactly', function()
    check(int8('-9223372036854775808', 'string'),
      assert(conn:query('select (-9223372036854775808)::int8 as v'))[1].v, 'integer')
    check(int8('-9223372036854775808', 'string'),
      assert(conn:query('select -9223372036854775807::int8 - 1 as v'))[1].v, 'integer')
  end)
end)

describe('decoding bytea text', function()
  local decode = core._decode
  local BYTEA, BYTEA_ARRAY = 17, 1001

  it('decodes the hex and escape formats', function()
    check('\0\255A', decode('\\x00ff41', BYTEA))
    check('\0\255A\\', decode('\\000\\377A\\\\', BYTEA))
    check({ '\1\2' }, core._decode_array('{"\\\\x0102"}', BYTEA_ARRAY))
  end)

  -- The server never sends these; the decoder must still be total.
  local MALFORMED = {
    '\\xzz', '\\x0g', '\\x123', '\\x\255\255', '\\x-1', '\\', 'a\\', '\\1', '\\12', '\\9aa', '\\400', '\\08a',
  }
  it('refuses a bytea[] literal with a malformed element', function()
    for _, text in ipairs{ '{"\\\\xzz"}', '{"\\\\x123"}', '{"\\\\9aa"}', '{"\\\\x-1"}' } do
      local v, msg = core._decode_array(text, BYTEA_ARRAY)
      assert.is_nil(v, text)
      assert.are.equal('malformed', msg)
    end
  end)

  for _, text in ipairs(MALFORMED) do
    it(('refuses the malformed bytea text %s'):format(show(text)), function()
      local v, msg = decode(text, BYTEA)
      assert.is_nil(v)
      assert.are.equal('malformed', msg)
    end)
  end
end)

-- Argument errors name the function as called -----------------------------------

describe('argument errors', function()
  local function in_pipeline(...)
    local args = table.pack and table.pack(...) or { n = select('#', ...), ... }
    return function()
      conn:pipeline(function(p) p:query('select 1') p:query((table.unpack or unpack)(args, 1, args.n)) end)
    end
  end

  -- { call, name as called, argument number, text the message holds }
  local CASES = {
    -- module level (the "default" pool)
    { function() pgpool.query(nil) end, 'pgpool.query', 1, 'sql must be a string, got nil' },
    { function() pgpool.query('select $1', print) end, 'pgpool.query', 2, 'parameter 1: cannot send a function' },
    { function() pgpool.exec(42) end, 'pgpool.exec', 1, 'sql must be a string, got number' },
    { function() pgpool.exec('select 1', 2) end, 'pgpool.exec', 2, 'takes no parameters' },
    { function() pgpool.acquire('soon') end, 'pgpool.acquire', 1, 'got string' },
    { function() pgpool.acquire{ timeout = 'x' } end, 'pgpool.acquire', 1, "option 'timeout'" },
    { function() pgpool.transaction(nil) end, 'pgpool.transaction', 1, 'fn must be a function, got nil' },
    { function() pgpool.transaction(print, 'x') end, 'pgpool.transaction', 2, 'options must be a table' },
    { function() pgpool.with('x') end, 'pgpool.with', 1, 'fn must be a function, got string' },
    { function() pgpool.with(print, { tiemout = 1 }) end, 'pgpool.with', 2, "unknown option 'tiemout'" },
    { function() pgpool.shutdown('x') end, 'pgpool.shutdown', 1, 'got string' },
    { function() pgpool.shutdown_all('x') end, 'pgpool.shutdown_all', 1, 'timeout' },
    { function() pgpool.configure('x') end, 'pgpool.configure', 1, 'options must be a table, got string' },
    { function() pgpool.configure{ max = 'x' } end, 'pgpool.configure', 1, "option 'max'" },
    { function() pgpool.configure{ colour = 'x' } end, 'pgpool.configure', 1, "unknown option 'colour'" },
    { function() pgpool.pool(false) end, 'pgpool.pool', 1, 'got boolean' },
    { function() pgpool.bytea(12) end, 'pgpool.bytea', 1, 'got number' },
    { function() pgpool.on_log('x') end, 'pgpool.on_log', 1, 'got string' },
    -- a pool handle
    { function() pool:query(nil) end, 'pool:query', 1, 'sql must be a string, got nil' },
    { function() pool:query('select $1, $2', 1, coroutine.create(print)) end, 'pool:query', 3,
      'parameter 2: cannot send a thread' },
    { function() pool:exec({}) end, 'pool:exec', 1, "statement table's [1] must be the sql string, got nil" },
    { function() pool:exec({ 'select 1', tiemout = 1 }) end, 'pool:exec', 1, 'not string tiemout' },
    { function() pool:acquire('soon') end, 'pool:acquire', 1, 'got string' },
    { function() pool:acquire{ tiemout = 1 } end, 'pool:acquire', 1, "unknown option 'tiemout'" },
    { function() pool:shutdown{ timeout = -1 } end, 'pool:shutdown', 1, "option 'timeout'" },
    { function() pool:transaction(nil) end, 'pool:transaction', 1, 'fn must be a function' },
    { function() pool:transaction(print, { isolation = 'x' }) end, 'pool:transaction', 2, "option 'isolation'" },
    { function() pool:with(nil) end, 'pool:with', 1, 'fn must be a function' },
    { function() pool:with(print, { timeout = -1 }) end, 'pool:with', 2, "option 'timeout'" },
    { function() pool:with(print, 5) end, 'pool:with', 2, 'options must be a table' },
    -- a connection handle
    { function() conn:query(nil) end, 'conn:query', 1, 'sql must be a string, got nil' },
    { function() conn:query('select $1', { a = 1 }) end, 'conn:query', 2, 'parameter 1: table is not an array' },
    { function() conn:query('select $1', { 'a', 'b\0' }) end, 'conn:query', 2, 'parameter 1: array element 2' },
    { function() conn:exec(nil) end, 'conn:exec', 1, 'got nil' },
    { function() conn:exec('select 1', 'x') end, 'conn:exec', 2, 'takes no parameters' },
    { function() conn:pipeline('select 1') end, 'conn:pipeline', 1, 'fn must be a function, got string' },
    { function() conn:pipeline(print, true) end, 'conn:pipeline', 2, 'options must be a table' },
    { function() conn:pipeline(print, { isolated = true }) end, 'conn:pipeline', 2, "unknown option 'isolated'" },
    { in_pipeline(42), 'p:query', 1, 'sql must be a string, got number' },
    { in_pipeline('select $1, $2', 1, print), 'p:query', 3, 'statement 2, parameter 2: cannot send a function' },
    { function() conn:run_pipeline('x') end, 'conn:run_pipeline', 1, 'got string' },
    { function() conn:run_pipeline({ 'select 1' }) end, 'conn:run_pipeline', 1, 'statement 1 is not a table' },
  }
  for i, case in ipairs(CASES) do
    it(('#%d: names %s and argument #%d (%s)'):format(i, case[2], case[3], case[4]), function()
      assert_argerror(raises(case[1]), case[2], case[3], case[4])
    end)
  end

  it('names a bad self: pool.query(sql) called with a dot', function()
    local err = raises(function() pool.query('select 1') end)
    assert.truthy(contains(err, "calling 'pool:query' on bad self"), err)
    err = raises(function() conn.exec('select 1') end)
    assert.truthy(contains(err, "calling 'conn:exec' on bad self"), err)
  end)

  it('checks out nothing and sends nothing for any of them', function()
    local st = pool:stats()
    for _, case in ipairs(CASES) do pcall(case[1]) end
    local after = pool:stats()
    assert.are.equal(st.queries, after.queries)
    assert.are.equal(1, after.in_use)
    assert.is_false(pgpool.pool('default'):is_shut_down())
  end)
end)

if HAS_INTEGERS then
  describe('parameters at the integer limits', function()
    it('sends math.mininteger and math.maxinteger exactly', function()
      local row = assert(conn:query('select $1::int8 as lo, $2::int8 as hi', math.mininteger, math.maxinteger))[1]
      check(math.mininteger, row.lo, 'integer')
      check(math.maxinteger, row.hi, 'integer')
    end)
  end)
end
