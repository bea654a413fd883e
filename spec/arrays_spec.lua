-- Arrays both ways: PostgreSQL arrays of every decoded element type become
-- Lua arrays (nested for several dimensions, NULL elements as pgpool.null);
-- Lua array tables become array literals the server accepts, for `= any($1)`
-- and for casts such as `$1::text[]`.
--
-- The decoder (src/arraytext.c) is strict and total. Only the server's own
-- array_out text reaches it through queries, so malformed literals go
-- through the test hook pgpool.core._decode_array.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local null = pgpool.null
local bytea = pgpool.bytea
local values = require 'spec.support.values'
local huge = math.huge
local HAS_INTEGERS, NAN, NEG_ZERO = values.HAS_INTEGERS, values.NAN, values.NEG_ZERO
local ALL_BYTES, int8, show, check = values.ALL_BYTES, values.int8, values.show, values.check

local session = values.session('arrays_spec')
local value = session.value
setup(session.open)
teardown(session.close)

-- PostgreSQL -> Lua ------------------------------------------------------------

-- { PostgreSQL expression, expected Lua value, kind }
local DECODE = {
  -- one dimension, every decoded scalar type, NULL elements
  { "'{-32768,NULL,32767}'::int2[]", { -32768, null, 32767 }, 'integer' },
  { "'{-2147483648,NULL,2147483647}'::int4[]", { -2147483648, null, 2147483647 }, 'integer' },
  { "'{-9223372036854775808,9007199254740992,9007199254740993,NULL,9223372036854775807}'::int8[]",
    { int8('-9223372036854775808', 'string'), int8('9007199254740992', 'number'),
      int8('9007199254740993', 'string'), null, int8('9223372036854775807', 'string') }, 'integer' },
  { "'{0,4294967295,NULL}'::oid[]", { 0, 4294967295, null }, 'integer' },
  { "'{t,f,NULL}'::bool[]", { true, false, null } },
  { "'{1.5,0.1,-0,NaN,Infinity,-Infinity,NULL}'::float4[]", { 1.5, 0.1, NEG_ZERO, NAN, huge, -huge, null } },
  { "'{0.1,5e-324,1e308,-0,NaN,Infinity,-Infinity,NULL}'::float8[]",
    { 0.1, 5e-324, 1e308, NEG_ZERO, NAN, huge, -huge, null } },
  { "'{1.50,-0.001,NaN,123456789012345678901234567890.1,NULL}'::numeric[]",
    { '1.50', '-0.001', 'NaN', '123456789012345678901234567890.1', null } },
  { [[array['\x00ff'::bytea, ''::bytea, null, '\x5c22'::bytea] ]], { '\0\255', '', null, '\\"' } },
  { "'{a,NULL,\"\"}'::text[]", { 'a', null, '' } },
  { "'{ab,\"a b\",NULL}'::varchar[]", { 'ab', 'a b', null } },
  { "'{a,NULL}'::char(2)[]", { 'a ', null } },
  { "'{pg_class,NULL}'::name[]", { 'pg_class', null } },
  { "'{x,NULL}'::\"char\"[]", { 'x', null } },
  { "'{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11,NULL}'::uuid[]", { 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', null } },
  { [[array['{"a": "b\"c", "d": [1, null]}'::json, '42'::json, null] ]],
    { [[{"a": "b\"c", "d": [1, null]}]], '42', null } },
  { [[array['{"b": 1, "a": "x,y"}'::jsonb, null] ]], { [[{"a": "x,y", "b": 1}]], null } },
  { "'{2024-02-29,infinity,NULL}'::date[]", { '2024-02-29', 'infinity', null } },
  { "'{12:34:56,NULL}'::time[]", { '12:34:56', null } },
  { "'{\"2024-02-29 12:34:56\",NULL}'::timestamp[]", { '2024-02-29 12:34:56', null } },
  { "'{\"2024-02-29 12:34:56+00\",NULL}'::timestamptz[]", { '2024-02-29 12:34:56+00', null } },
  { "'{12:00:00+02,NULL}'::timetz[]", { '12:00:00+02', null } },
  { "'{\"1 day 02:00:00\",NULL}'::interval[]", { '1 day 02:00:00', null } },
  { "'{10.0.0.1,NULL}'::inet[]", { '10.0.0.1', null } },
  { "'{10.0.0.0/8}'::cidr[]", { '10.0.0.0/8' } },
  { "'{08:00:2b:01:02:03}'::macaddr[]", { '08:00:2b:01:02:03' } },
  { "array[B'101', null]", { '101', null } },
  { "array[B'1'::varbit, B'10'::varbit]", { '1', '10' } },
  -- empty arrays
  { "'{}'::int4[]", {} },
  { "'{}'::text[]", {} },
  { "'{}'::bytea[]", {} },
  { "array[]::float8[]", {} },
  -- quoting: the server quotes what needs it, the decoder undoes it exactly
  { [[array['{', '}', '"', ',', '\', ' ', '', 'NULL', 'null', 'NuLl', null] ]],
    { '{', '}', '"', ',', '\\', ' ', '', 'NULL', 'null', 'NuLl', null } },
  { [[array['a"b', 'c\d', '{x,y}', ' lead', 'trail ', E'tab\there', E'new\nline', '\"\\'] ]],
    { 'a"b', 'c\\d', '{x,y}', ' lead', 'trail ', 'tab\there', 'new\nline', '\\"\\\\' } },
  { "array['h\195\169llo', '\240\159\152\128']", { 'h\195\169llo', '\240\159\152\128' } },
  { "array[repeat('w', 100), repeat('q', 70)]", { ('w'):rep(100), ('q'):rep(70) } },
  { "array[repeat('9', 100)::numeric]", { ('9'):rep(100) } },
  { "array[repeat('\"', 70)]", { ('"'):rep(70) } },
  -- non-default lower bounds: Lua arrays still start at 1
  { "'[0:2]={1,2,3}'::int[]", { 1, 2, 3 }, 'integer' },
  { "'[-2:-1]={a,NULL}'::text[]", { 'a', null } },
  { "'[5:5]={t}'::bool[]", { true } },
  { "'[0:1][3:4]={{1,2},{3,4}}'::int[]", { { 1, 2 }, { 3, 4 } }, 'integer' },
  -- several dimensions
  { "'{{1,2},{3,4},{5,NULL}}'::int[]", { { 1, 2 }, { 3, 4 }, { 5, null } }, 'integer' },
  { "'{{1},{2}}'::int8[]", { { int8('1', 'number') }, { int8('2', 'number') } }, 'integer' },
  { "'{{{1,2},{3,4}},{{5,6},{7,8}}}'::int[]",
    { { { 1, 2 }, { 3, 4 } }, { { 5, 6 }, { 7, 8 } } }, 'integer' },
  { "'{{a,\"b c\"},{NULL,\"NULL\"}}'::text[]", { { 'a', 'b c' }, { null, 'NULL' } } },
  { [['{{"\\x00","\\xff"},{NULL,"\\x"}}'::bytea[] ]], { { '\0', '\255' }, { null, '' } } },
  { "'{{t,f},{NULL,t}}'::bool[]", { { true, false }, { null, true } } },
  { "'{{1.5,NaN}}'::float8[]", { { 1.5, NAN } } },
  { "array_fill(null::int, array[2, 2])", { { null, null }, { null, null } } },
  { "array_fill(7, array[1, 1, 1, 1, 1, 1])", { { { { { { 7 } } } } } }, 'integer' },  -- 6: the server's maximum
}

describe('arrays from PostgreSQL', function()
  for _, case in ipairs(DECODE) do
    it(('decodes %s to %s'):format(case[1], show(case[2])), function()
      check(case[2], value('select ' .. case[1] .. ' as v'), case[3])
    end)
  end

  it('decodes a bytea array with all 256 byte values in one element', function()
    check({ ALL_BYTES, '' }, value('select array[$1::bytea, $2::bytea] as v', bytea(ALL_BYTES), bytea('')))
  end)

  it('decodes a 10000-element array', function()
    local v = value('select array_agg(i order by i) as v from generate_series(1, 10000) i')
    assert.are.equal(10000, #v)
    for i = 1, 10000 do assert(v[i] == i) end
  end)

  it('decodes bytea arrays in the escape output format too', function()
    assert(session.conn:exec("set bytea_output to 'escape'"))
    local ok, err = pcall(function()
      check({ '\0\255\\"', null, ALL_BYTES }, value([[select array['\x00ff5c22'::bytea, null, $1::bytea] as v]],
        bytea(ALL_BYTES)))
    end)
    assert(session.conn:exec("set bytea_output to 'hex'"))
    assert(ok, err)
  end)

  it('decodes arrays of arrays in every row of a multi-row result', function()
    local res = assert(session.conn:query('select i, array[i, null, i * 2] as v from generate_series(1, 3) i order by i'))
    for i = 1, 3 do check({ i, null, i * 2 }, res[i].v, 'integer') end
  end)

end)

describe('the array literal parser', function()
  local decode = require('pgpool.core')._decode_array
  local INT4_ARRAY, TEXT_ARRAY = 1007, 1009

  local MALFORMED = {
    '', ' ', '{', '}', '{1', '{1,', '{1,}', '{,1}', '{1,,2}', '{1}}', '{1} x', 'x{1}',
    '{{1,2},{3}}', '{{1,2},3}', '{1,{2,3}}', '{{}}', '{"a}', '{"a"b}', '{a"b"}',
    '{a\\b}', '{"\\}', '[1:2={1,2}', '[1:x]={1,2}', '[1:2]{1,2}',
    '{{{{{{{1}}}}}}}',  -- 7 dimensions; the server allows 6
  }
  for _, text in ipairs(MALFORMED) do
    it('rejects the malformed literal ' .. string.format('%q', text), function()
      local value, msg = decode(text, TEXT_ARRAY)
      assert.is_nil(value)
      assert.are.equal('malformed', msg)
      assert.is_nil(decode(text, INT4_ARRAY))
    end)
  end

  local WELL_FORMED = {
    { '{}', TEXT_ARRAY, {} },
    { ' { 1 , 2 } ', INT4_ARRAY, { 1, 2 } },
    { '[0:1]={7,8}', INT4_ARRAY, { 7, 8 } },
    { '[1:1][1:2]={{1,2}}', INT4_ARRAY, { { 1, 2 } } },
    { '{NULL,null,"NULL"}', TEXT_ARRAY, { null, null, 'NULL' } },
    { '{"a\\"b","c\\\\d","{,}"}', TEXT_ARRAY, { 'a"b', 'c\\d', '{,}' } },
    { '{{{{{{1}}}}}}', INT4_ARRAY, { { { { { { 1 } } } } } } },
  }
  for _, case in ipairs(WELL_FORMED) do
    it('accepts the literal ' .. string.format('%q', case[1]), function()
      assert.are.same(case[3], (decode(case[1], case[2])))
    end)
  end

  it('never reads past the end of a literal cut short anywhere', function()
    local text = '{{"a,b","c\\"d"},{NULL,"e"}}'
    assert.is_table(decode(text, TEXT_ARRAY))
    for cut = 0, #text - 1 do
      assert.is_nil(decode(text:sub(1, cut), TEXT_ARRAY), text:sub(1, cut))
    end
  end)
end)

-- Lua -> PostgreSQL ------------------------------------------------------------

-- { cast, Lua array, expected back (default: the same) , kind }
local ROUND_TRIPS = {
  { 'text[]', { 'a"b', 'c\\d', '{', '}', '{x,y}', 'a,b', ' sp ', '', 'NULL', 'null', null, '\\"\\\\' } },
  { 'text[]', { 'h\195\169llo', '\240\159\152\128', 'tab\tnl\ncr\r' } },
  { 'text[]', { ('z'):rep(100000) } },
  { 'text[]', { null } },
  { 'text[]', { null, null } },
  { 'text[]', {} },
  { 'int4[]', {} },
  { 'int4[]', { 1, 2, 3 }, nil, 'integer' },
  { 'int4[]', { -2147483648, null, 2147483647 }, nil, 'integer' },
  { 'int2[]', { -32768, 32767 }, nil, 'integer' },
  { 'int8[]', { '9223372036854775807', '-9223372036854775808', 9007199254740992 },
    { int8('9223372036854775807', 'string'), int8('-9223372036854775808', 'string'),
      int8('9007199254740992', 'number') }, 'integer' },
  { 'oid[]', { 4294967295 }, nil, 'integer' },
  { 'bool[]', { true, false, null } },
  { 'float8[]', { 0.1, 1 / 3, 0.1 + 0.2, 1e308, 5e-324, -0.0, huge, -huge, 0 / 0 },
    { 0.1, 1 / 3, 0.1 + 0.2, 1e308, 5e-324, NEG_ZERO, huge, -huge, NAN } },
  { 'float4[]', { 1.5, 0.1, null } },
  { 'numeric[]', { '1.50', 'NaN', '123456789012345678901234567890.000000000001', 2.5 },
    { '1.50', 'NaN', '123456789012345678901234567890.000000000001', '2.5' } },
  { 'bytea[]', { bytea('\0\255'), bytea(''), null, bytea(ALL_BYTES), bytea('\\"{},') },
    { '\0\255', '', null, ALL_BYTES, '\\"{},' } },
  { 'varchar[]', { 'a b', 'NULL' } },
  { 'uuid[]', { 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', null } },
  { 'json[]', { [[{"a": "b\"c", "d": "\\"}]], '[1, 2]', null } },
  { 'jsonb[]', { [[{"k": "{,}"}]] } },
  { 'date[]', { '2024-02-29', 'infinity' } },
  { 'timestamptz[]', { '2024-02-29 12:34:56+00' } },
  { 'interval[]', { '1 day 02:00:00' } },
  -- several dimensions
  { 'int4[]', { { 1, 2 }, { 3, null } }, nil, 'integer' },
  { 'text[]', { { 'a', '"' }, { '\\', null } } },
  { 'int4[]', { { { 1, 2 }, { 3, 4 } }, { { 5, 6 }, { 7, 8 } } }, nil, 'integer' },
  { 'bool[]', { { true }, { false } } },
  { 'bytea[]', { { bytea('\0') }, { bytea('\255') } }, { { '\0' }, { '\255' } } },
  { 'int4[]', { { { { { { 6 } } } } } }, nil, 'integer' },
}

describe('Lua array tables as parameters', function()
  for _, case in ipairs(ROUND_TRIPS) do
    local cast, v, expected, kind = case[1], case[2], case[3], case[4]
    if expected == nil then expected = v end
    it(('round-trip %s through $1::%s'):format(show(expected), cast), function()
      check(expected, value(('select $1::%s as v'):format(cast), v), kind)
    end)
  end

  it('sends pgpool.null elements as NULL and the string "NULL" as a string', function()
    local res = assert(session.conn:query([[select (a)[1] is null as n1, (a)[2] is null as n2, (a)[2] as s
      from (select $1::text[] as a) t]], { null, 'NULL' }))
    assert.is_true(res[1].n1)
    assert.is_false(res[1].n2)
    assert.are.equal('NULL', res[1].s)
  end)

  it('sends nested tables as a multi-dimensional array (array_dims [1:2][1:3])', function()
    check('[1:2][1:3]', value('select array_dims($1::int[]) as v', { { 1, 2, 3 }, { 4, 5, 6 } }))
    check(3, value('select array_ndims($1::int[]) as v', { { { 1 } }, { { 2 } } }), 'integer')
    check(0, value('select cardinality($1::int[]) as v', {}), 'integer')
  end)

  it('sends literals usable with = any($1) without a cast', function()
    assert(session.conn:exec('drop table if exists arrays_any; create temp table arrays_any(id int, name text)'))
    assert(session.conn:exec([[insert into arrays_any values (1, 'a"b'), (2, 'c,d'), (3, 'e\f'), (4, '{g}'), (5, 'NULL')]]))
    local res = assert(session.conn:query('select id from arrays_any where id = any($1) order by id', { 4, 1, 9 }))
    check({ 1, 4 }, { res[1].id, res[2].id }, 'integer')
    assert.are.equal(2, #res)
    res = assert(session.conn:query('select id from arrays_any where name = any($1) order by id',
      { 'a"b', 'c,d', 'e\\f', '{g}', 'NULL', 'missing' }))
    assert.are.equal(5, #res)
    res = assert(session.conn:query('select id from arrays_any where name = any($1)', { null }))
    assert.are.equal(0, #res)
    res = assert(session.conn:query('select id from arrays_any where id = any($1)', {}))
    assert.are.equal(0, #res)
    res = assert(session.conn:query('select count(*)::int as n from arrays_any where id <> all($1)', { 1, 2 }))
    check(3, res[1].n, 'integer')
  end)

  it('sends an array with 10000 elements', function()
    local t = {}
    for i = 1, 10000 do t[i] = i end
    check(50005000, value('select sum(x)::int as v from unnest($1::int[]) x', t), 'integer')
  end)

  it('sends bytea elements binary-exact: octet_length of each element', function()
    local res = assert(session.conn:query('select octet_length(x) as n from unnest($1::bytea[]) x',
      { bytea(ALL_BYTES), bytea('\0'), bytea('') }))
    check({ 256, 1, 0 }, { res[1].n, res[2].n, res[3].n }, 'integer')
  end)

  it('sends booleans as true/false elements (usable as bool[])', function()
    check(true, value('select $1::bool[] = array[true, false] as v', { true, false }))
  end)

  it('gets a server error (22P02), not a raise, for a ragged nested table, and stays usable', function()
    local res, msg, code = session.conn:query('select $1::int[] as v', { { 1, 2 }, { 3 } })
    assert.is_nil(res)
    assert.are.equal('22P02', code, msg)
    check(1, value('select 1 as v'), 'integer')
  end)

  it('raises for a table that is not a sequence, naming the parameter', function()
    for _, bad in ipairs{ { x = 1 }, { 1, nil, 3 }, { 1, { 2, y = 3 } } } do
      local ok, err = pcall(session.conn.query, session.conn, 'select $1::text, $2::int[]', 'a', bad)
      assert.is_false(ok)
      assert.truthy(tostring(err):find('parameter 2', 1, true), err)
    end
  end)

  it('raises for an unsupported element, naming the parameter and the type', function()
    local ok, err = pcall(session.conn.query, session.conn, 'select $1::text[]', { 'a', coroutine.create(print) })
    assert.is_false(ok)
    assert.truthy(tostring(err):find('parameter 1', 1, true), err)
    assert.truthy(tostring(err):find('thread', 1, true), err)
  end)

  it('raises for a string element with a NUL byte, naming the parameter', function()
    local ok, err = pcall(session.conn.query, session.conn, 'select $1::text[]', { 'a', 'b\0c' })
    assert.is_false(ok)
    assert.truthy(tostring(err):find('parameter 1', 1, true), err)
    assert.truthy(tostring(err):find('NUL', 1, true), err)
  end)
end)
