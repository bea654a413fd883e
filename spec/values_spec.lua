-- Values, both ways, table-driven: every row of the two value tables of the
-- README ("Results and values"), on Lua 5.4 and on LuaJIT.
--
--   PostgreSQL -> Lua : DECODE (literals selected from the server) and NULLS
--   Lua -> PostgreSQL : SENT_AS (the text the server received, via $1::text),
--                       ROUND_TRIPS (select $1::type and back), FLOATS
--   misuse            : BAD_PARAMETERS (must raise, naming number and type)
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local null = pgpool.null
local bytea = pgpool.bytea
local unpack = table.unpack or unpack
local values = require 'spec.support.values'
local huge = math.huge
local HAS_INTEGERS, NAN, NEG_ZERO, NIL = values.HAS_INTEGERS, values.NAN, values.NEG_ZERO, values.NIL
local ALL_BYTES, int8, show, check = values.ALL_BYTES, values.int8, values.show, values.check

local session = values.session('values_spec')
local value = session.value
setup(session.open)
teardown(session.close)

-- PostgreSQL -> Lua ---------------------------------------------------------

-- { PostgreSQL expression, expected Lua value, kind }
local DECODE = {
  -- bool
  { 'true', true },
  { 'false', false },
  { "'yes'::bool", true },
  -- int2, int4, oid: integers
  { '(-32768)::int2', -32768, 'integer' },
  { '32767::int2', 32767, 'integer' },
  { '0::int2', 0, 'integer' },
  { '(-2147483648)::int4', -2147483648, 'integer' },
  { '2147483647::int4', 2147483647, 'integer' },
  { '0::oid', 0, 'integer' },
  { '4294967295::oid', 4294967295, 'integer' },
  { "'pg_class'::regclass::oid", 1259, 'integer' },
  -- int8: integer on 5.4; on LuaJIT exact numbers up to 2^53, strings beyond
  { '(-9223372036854775808)::int8', int8('-9223372036854775808', 'string'), 'integer' },
  { '9223372036854775807::int8', int8('9223372036854775807', 'string'), 'integer' },
  { '0::int8', int8('0', 'number'), 'integer' },
  { '9007199254740991::int8', int8('9007199254740991', 'number'), 'integer' },
  { '9007199254740992::int8', int8('9007199254740992', 'number'), 'integer' },     -- 2^53
  { '(-9007199254740992)::int8', int8('-9007199254740992', 'number'), 'integer' }, -- -2^53
  { '9007199254740993::int8', int8('9007199254740993', 'string'), 'integer' },     -- 2^53 + 1
  { '(-9007199254740993)::int8', int8('-9007199254740993', 'string'), 'integer' }, -- -(2^53 + 1)
  { '(select count(*) from generate_series(1, 3))', int8('3', 'number'), 'integer' },
  -- float4
  { '1.5::float4', 1.5, 'float' },
  { '0.1::float4', 0.1, 'float' },
  { '(-2.5)::float4', -2.5, 'float' },
  { "'3.4028235e38'::float4", 3.4028235e38, 'float' },
  { "'1e-45'::float4", 1e-45, 'float' },
  { "'-0'::float4", NEG_ZERO },
  { "'Infinity'::float4", huge },
  { "'-Infinity'::float4", -huge },
  { "'NaN'::float4", NAN },
  -- float8
  { '0::float8', 0.0, 'float' },
  { "'-0'::float8", NEG_ZERO },
  { "'Infinity'::float8", huge },
  { "'-Infinity'::float8", -huge },
  { "'NaN'::float8", NAN },
  { "'1e308'::float8", 1e308, 'float' },
  { "'1.7976931348623157e308'::float8", 1.7976931348623157e308, 'float' },
  { "'5e-324'::float8", 5e-324, 'float' },
  { "'2.2250738585072014e-308'::float8", 2.2250738585072014e-308, 'float' },
  { '0.1::float8', 0.1, 'float' },
  { '(0.1::float8 + 0.2::float8)', 0.1 + 0.2, 'float' },
  { "'9007199254740993'::float8", 9007199254740992.0, 'float' },
  { '(1::float8 / 3)', 1 / 3, 'float' },
  -- numeric: the exact text
  { '123456789012345678901234567890.123456789012345678901234567890::numeric',
    '123456789012345678901234567890.123456789012345678901234567890' },
  { '1.50::numeric', '1.50' },
  { '(-0.000000000000000000001)::numeric', '-0.000000000000000000001' },
  { "'NaN'::numeric", 'NaN' },
  { "'Infinity'::numeric", 'Infinity' },
  { '9223372036854775808::numeric', '9223372036854775808' },
  -- bytea: the raw bytes
  { "'\\x00ff'::bytea", '\0\255' },
  { "''::bytea", '' },
  { "'\\x5c27225c'::bytea", '\\\'"\\' },
  { "(select decode(string_agg(lpad(to_hex(i), 2, '0'), '' order by i), 'hex') from generate_series(0, 255) i)",
    ALL_BYTES },
  -- text
  { "''::text", '' },
  { "'hello'::text", 'hello' },
  { "'h\195\169llo \226\156\147 \240\159\152\128'::text", 'h\195\169llo \226\156\147 \240\159\152\128' },
  { "E'quote '' dq \" backslash \\\\ tab \\t newline \\n'::text", 'quote \' dq " backslash \\ tab \t newline \n' },
  { "repeat('x', 100000)", ('x'):rep(100000) },
  { "'NULL'::text", 'NULL' },
  -- json, jsonb: strings (jsonb as the server normalizes it)
  { [['{"a": [1, 2.50, null], "b": "\u00e9"}'::json]], [[{"a": [1, 2.50, null], "b": "\u00e9"}]] },
  { [['{"b":1, "a":[1,2.50,null]}'::jsonb]], [[{"a": [1, 2.50, null], "b": 1}]] },
  { [['"text"'::jsonb]], [["text"]] },
  { [['42'::json]], '42' },
  -- dates and times: strings
  { "'2024-02-29'::date", '2024-02-29' },
  { "'infinity'::date", 'infinity' },
  { "'0044-03-15 BC'::date", '0044-03-15 BC' },
  { "'2024-02-29 12:34:56.789+00'::timestamptz", '2024-02-29 12:34:56.789+00' },
  { "'2024-02-29 14:34:56+02'::timestamptz", '2024-02-29 12:34:56+00' },
  { "'-infinity'::timestamptz", '-infinity' },
  { "'2024-02-29 12:34:56'::timestamp", '2024-02-29 12:34:56' },
  { "'12:34:56.5'::time", '12:34:56.5' },
  -- uuid: string, lower case
  { "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid", 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' },
  -- interval: string
  { "'1 day 02:03:04.5'::interval", '1 day 02:03:04.5' },
  { "'-1 year -2 mons'::interval", '-1 years -2 mons' },
  { "'0'::interval", '00:00:00' },
  -- others: strings
  { "'(1,2)'::point", '(1,2)' },
  { "'10.0.0.1/8'::inet", '10.0.0.1/8' },
  { "'08:00:2b:01:02:03'::macaddr", '08:00:2b:01:02:03' },
  { "B'101'", '101' },
  { "'[1,5)'::int4range", '[1,5)' },
  { "'pg_class'::regclass", 'pg_class' },
  { "'x'::\"char\"", 'x' },
  { "'ab'::char(4)", 'ab  ' },
  { "'ab'::varchar", 'ab' },
  { "'a fat cat'::tsvector", "'a' 'cat' 'fat'" },
  { "'0/16B3748'::pg_lsn", '0/16B3748' },
  -- arrays of the above (arrays_spec.lua has the rest)
  { "'{1,NULL,3}'::int4[]", { 1, null, 3 }, 'integer' },
  { "'{{a,b},{c,NULL}}'::text[]", { { 'a', 'b' }, { 'c', null } } },
}

describe('PostgreSQL -> Lua', function()
  for _, case in ipairs(DECODE) do
    local expr, expected, kind = case[1], case[2], case[3]
    local suffix = (kind == 'integer' and HAS_INTEGERS) and ' (integer subtype)' or ''
    it(('decodes %s to %s%s'):format(expr, show(expected), suffix), function()
      check(expected, value('select ' .. expr .. ' as v'), kind)
    end)
  end

  -- One typed NULL per row of the table: pgpool.null, with the key present.
  local NULLS = {
    'bool', 'int2', 'int4', 'int8', 'oid', 'float4', 'float8', 'numeric', 'bytea',
    'text', 'json', 'jsonb', 'date', 'timestamptz', 'uuid', 'interval', 'point',
    'int4[]', 'text[]',
  }
  for _, t in ipairs(NULLS) do
    it(('decodes NULL::%s to pgpool.null with the column key present'):format(t), function()
      local v, row = value(('select null::%s as v, 1 as one'):format(t))
      assert.are.equal(null, v)
      assert.are.equal(null, rawget(row, 'v'))
      local keys = 0
      for _ in pairs(row) do keys = keys + 1 end
      assert.are.equal(2, keys)
    end)
  end

  it('decodes bytea in the escape output format as the same raw bytes (all 256 values)', function()
    assert(session.conn:exec("set bytea_output to 'escape'"))
    local ok, err = pcall(function()
      check(ALL_BYTES, value('select $1::bytea as v', bytea(ALL_BYTES)))
      check('\\\'"\\', value([[select '\x5c27225c'::bytea as v]]))
      check({ '\0\255\\', null }, value([[select array['\x00ff5c'::bytea, null] as v]]))
    end)
    assert(session.conn:exec("set bytea_output to 'hex'"))
    assert(ok, err)
  end)

  it('decodes many columns of mixed types in one row, each by its own type', function()
    local res = assert(session.conn:query([[select 1::int2 as a, 'x'::text as b, 2.5::float8 as c,
      true as d, null::int as e, '\x41'::bytea as f, 3::int8 as g, '{1}'::int[] as h]]))
    local row = res[1]
    check(1, row.a, 'integer')
    check('x', row.b)
    check(2.5, row.c)
    check(true, row.d)
    check(null, row.e)
    check('A', row.f)
    check(int8('3', 'number'), row.g, 'integer')
    check({ 1 }, row.h, 'integer')
    assert.are.same({ 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h' }, res.columns)
  end)
end)

-- Lua -> PostgreSQL -----------------------------------------------------------

-- What the server received, as text: { description, Lua value, expected text }
local SENT_AS = {
  { 'true', true, 'true' },
  { 'false', false, 'false' },
  { 'the integer 0', 0, '0' },
  { 'the integer -1', -1, '-1' },
  { 'the integer 2147483647', 2147483647, '2147483647' },
  { 'the integer 2^53', 9007199254740992, '9007199254740992' },
  { 'the float 1.5', 1.5, '1.5' },
  { 'the float 0.1', 0.1, '0.1' },
  { 'the float 1/3', 1 / 3, '0.3333333333333333' },
  { 'the float 0.1 + 0.2', 0.1 + 0.2, '0.30000000000000004' },
  { 'the float -0.0', -0.0, '-0' },
  { 'the float 1e308', 1e308, '1e+308' },
  { 'inf', huge, 'Infinity' },
  { '-inf', -huge, '-Infinity' },
  { 'nan', 0 / 0, 'NaN' },
  { 'the empty string', '', '' },
  { 'a unicode string', 'h\195\169llo \240\159\152\128', 'h\195\169llo \240\159\152\128' },
  { 'a string with quotes and backslashes', [['; drop table x; -- \ "]], [['; drop table x; -- \ "]] },
  { 'the string "NULL"', 'NULL', 'NULL' },
}
if HAS_INTEGERS then
  SENT_AS[#SENT_AS + 1] = { 'math.maxinteger', math.maxinteger, '9223372036854775807' }
  SENT_AS[#SENT_AS + 1] = { 'math.mininteger', math.mininteger, '-9223372036854775808' }
  SENT_AS[#SENT_AS + 1] = { 'the float 3.0 (integral)', 3.0, '3' }
end

-- Lua value -> `select $1::<type>` -> Lua value:
-- { type, Lua value, expected back (default: the value itself), kind }
local ROUND_TRIPS = {
  { 'bool', true }, { 'bool', false },
  { 'int2', -32768, nil, 'integer' }, { 'int2', 32767, nil, 'integer' },
  { 'int4', -2147483648, nil, 'integer' }, { 'int4', 2147483647, nil, 'integer' },
  { 'oid', 4294967295, nil, 'integer' },
  { 'int8', 9007199254740992, int8('9007199254740992', 'number'), 'integer' },
  { 'int8', -9007199254740992, int8('-9007199254740992', 'number'), 'integer' },
  { 'int8', '9007199254740993', int8('9007199254740993', 'string'), 'integer' },
  { 'int8', '9223372036854775807', int8('9223372036854775807', 'string'), 'integer' },
  { 'int8', '-9223372036854775808', int8('-9223372036854775808', 'string'), 'integer' },
  { 'float4', 1.5 }, { 'float4', 0.1 }, { 'float4', huge }, { 'float4', -huge },
  { 'float4', 0 / 0, NAN }, { 'float4', -0.0, NEG_ZERO },
  { 'float8', 0.1 }, { 'float8', 1 / 3 }, { 'float8', 0.1 + 0.2 },
  { 'float8', 1e308 }, { 'float8', 1.7976931348623157e308 }, { 'float8', 5e-324 },
  { 'float8', 2.2250738585072014e-308 }, { 'float8', -1.2345678901234567e-300 },
  { 'float8', huge }, { 'float8', -huge }, { 'float8', 0 / 0, NAN }, { 'float8', -0.0, NEG_ZERO },
  { 'float8', 123456789.123456789 }, { 'float8', 2 ^ 60 }, { 'float8', 1e22 },
  { 'numeric', '123456789012345678901234567890.000000000000000000000000000001' },
  { 'numeric', 0.1, '0.1' }, { 'numeric', 42, '42' },
  { 'bytea', bytea(ALL_BYTES), ALL_BYTES },
  { 'bytea', bytea('\0'), '\0' },
  { 'bytea', bytea('a\0b\255'), 'a\0b\255' },
  { 'bytea', bytea(''), '' },
  { 'text', '' }, { 'text', 'h\195\169llo \240\159\152\128' },
  { 'text', ' leading and trailing spaces ' }, { 'text', 'tab\tnewline\ncr\r' },
  { 'text', ('y'):rep(200000) },
  { 'varchar', 'NULL' },
  { 'json', [[{"a": [1, 2.50, null], "b": "\"q\""}]] },
  { 'jsonb', [[{"b":1,"a":[1,2.50,null]}]], [[{"a": [1, 2.50, null], "b": 1}]] },
  { 'date', '2024-02-29' },
  { 'timestamptz', '2024-02-29 12:34:56.789+00' },
  { 'uuid', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' },
  { 'interval', '1 day 02:03:04.5' },
  { 'point', '(1,2)' },
  { 'int4[]', { 1, 2, 3 }, nil, 'integer' },
  { 'text[]', { 'a', null, 'NULL', '' } },
  { 'int4[]', { { 1, 2 }, { 3, null } }, nil, 'integer' },
  { 'bytea[]', { bytea('\0\255'), null }, { '\0\255', null } },
  { 'bool[]', { true, false, null } },
  { 'float8[]', { 0.1, -0.0, huge, 0 / 0 }, { 0.1, NEG_ZERO, huge, NAN } },
}
if HAS_INTEGERS then
  ROUND_TRIPS[#ROUND_TRIPS + 1] = { 'int8', math.maxinteger, nil, 'integer' }
  ROUND_TRIPS[#ROUND_TRIPS + 1] = { 'int8', math.mininteger, nil, 'integer' }
  ROUND_TRIPS[#ROUND_TRIPS + 1] = { 'int4', 7.0, 7, 'integer' }
end

-- Floats must be sent as the shortest text that reads back exactly.
-- Subnormals (5e-324, 1e-320, 4.9e-322) have fewer significant digits:
-- their shortest forms are shorter than 15 digits.
local FLOATS = {
  0.1, 0.5, 1.5, 1 / 3, 2 / 3, 0.1 + 0.2, 123.456, 1e-7, 1e17, 1e21, 1e22, 1e100, 1e308,
  1.7976931348623157e308, 2.2250738585072014e-308, 5e-324, 1e-320, 4.9e-322,
  -2.5, 3.14159, 6.02214076e23, 2 ^ -30, 1 + 2 ^ -52,
}

-- Significant digits of a decimal number text ("1.50e+3" -> 2).
local function significant_digits(text)
  local mantissa = text:lower():gsub('^[-+]', ''):gsub('e.*$', ''):gsub('%.', '')
  mantissa = mantissa:gsub('^0+', ''):gsub('0+$', '')
  return math.max(#mantissa, 1)
end

-- The fewest significant digits that read back as v exactly.
local function shortest_digits(v)
  for p = 1, 17 do
    if tonumber(('%.' .. p .. 'g'):format(v)) == v then return p end
  end
  return 17
end

describe('Lua -> PostgreSQL', function()
  for _, case in ipairs(SENT_AS) do
    it(('sends %s as the text %s'):format(case[1], show(case[3])), function()
      check(case[3], value('select $1::text as v', case[2]))
    end)
  end

  for _, case in ipairs(ROUND_TRIPS) do
    local t, v, expected, kind = case[1], case[2], case[3], case[4]
    if expected == nil then expected = v end
    local label = getmetatable(v) and ('pgpool.bytea(%s)'):format(show(expected)) or show(v)
    it(('round-trips %s through $1::%s'):format(label, t), function()
      check(expected, value('select $1::' .. t .. ' as v', v), kind)
    end)
  end

  for _, f in ipairs(FLOATS) do
    it(('sends the float %s as its shortest exact text (%d significant digits)')
        :format(('%.17g'):format(f), shortest_digits(f)), function()
      local sent = value('select $1::text as v', f)
      assert.are.equal(f, tonumber(sent), 'reads back exactly: ' .. sent)
      assert(significant_digits(sent) <= shortest_digits(f),
        ('sent %q: %d significant digits, the shortest exact text has %d (%s)')
          :format(sent, significant_digits(sent), shortest_digits(f),
            ('%.' .. shortest_digits(f) .. 'g'):format(f)))
      check(f, value('select $1::float8 as v', f))
    end)
  end

  it('binds nil as NULL, also as trailing parameters (three placeholders bound)', function()
    local res = assert(session.conn:query('select $1::int as a, $2::text as b, $3::bool as c', 1, nil, nil))
    check(1, res[1].a, 'integer')
    check(null, res[1].b)
    check(null, res[1].c)
  end)

  it('binds pgpool.null as NULL, first, middle and trailing', function()
    local res = assert(session.conn:query('select $1::int as a, $2::text as b, $3::bytea as c', null, 'x', null))
    check(null, res[1].a)
    check('x', res[1].b)
    check(null, res[1].c)
    local v = value('select $1::int is null and $2::text is null as v', null, nil)
    check(true, v)
  end)

  it('binds trailing nils through pool:query too (the parameter count is kept)', function()
    local res = assert(session.pool:query('select $1::int as a, $2::int as b', 5, nil))
    check(5, res[1].a, 'integer')
    check(null, res[1].b)
  end)

  it('sends a string that is not valid UTF-8 as is: the server refuses it with 22021', function()
    local res, msg, code = session.conn:query('select $1::text as v', '\255\254 not utf-8')
    assert.is_nil(res)
    assert.are.equal('22021', code, msg)
    check(1, value('select 1 as v'), 'integer')
  end)

  it('binds the empty string as text, not NULL', function()
    check(false, value('select $1::text is null as v', ''))
    check(0, value('select length($1::text) as v', ''), 'integer')
  end)

  it('sends pgpool.bytea as binary: every byte counted, none escaped', function()
    check(256, value('select octet_length($1::bytea) as v', bytea(ALL_BYTES)), 'integer')
    check(ALL_BYTES, value('select $1 as v', bytea(ALL_BYTES)))
  end)

  it('never interpolates a string parameter into the SQL', function()
    local evil = "x'); select pg_sleep(10); --"
    check(evil, value('select $1::text as v', evil))
    check(int8('1', 'number'), value('select count(*) as v from (select $1::text) s', evil), 'integer')
  end)
end)

-- Parameters that must raise, naming the parameter number and its type.
-- { description, value, text the message must contain }
local BAD_PARAMETERS = {
  { 'a string with a NUL byte', 'a\0b', 'NUL' },
  { 'a string that is only a NUL byte', '\0', 'NUL' },
  { 'a function', print, 'function' },
  { 'a coroutine', coroutine.create(function() end), 'thread' },
  { 'a full userdata (a file)', io.stdout, 'userdata' },
  { 'a table with string keys', { a = 1 }, 'not an array' },
  { 'a table with a hole', { 1, nil, 3 }, 'not an array' },
  { 'a sequence with an extra key', { 1, 2, x = 3 }, 'not an array' },
  { 'a table starting at index 2', { [2] = 'x' }, 'not an array' },
  { 'a table with a float key', { [1.5] = 1 }, 'not an array' },
  { 'a nested table that is not a sequence', { { a = 1 } }, 'not an array' },
  { 'an array with a function element', { 1, print }, 'function' },
  { 'an array with a string element holding a NUL', { 'ok', 'a\0' }, 'NUL' },
}

describe('parameters that must raise', function()
  for _, case in ipairs(BAD_PARAMETERS) do
    for _, position in ipairs{ 1, 3 } do
      it(('raises for %s as parameter %d, naming the number and %q'):format(case[1], position, case[3]), function()
        local args = { 'a', 'b', 'c' }
        args[position] = case[2]
        local ok, err = pcall(session.conn.query, session.conn, 'select $1::text, $2::text, $3::text', unpack(args, 1, 3))
        assert.is_false(ok)
        err = tostring(err)
        assert.truthy(err:find('parameter ' .. position, 1, true), err)
        assert.truthy(err:find(case[3], 1, true), err)
        -- the connection is still usable afterwards
        check(1, value('select 1 as v'), 'integer')
      end)
    end
  end

  it('raises on pool:query before checking a connection out', function()
    local before = session.pool:stats()
    local ok, err = pcall(session.pool.query, session.pool, 'select $1::text', print)
    assert.is_false(ok)
    assert.truthy(tostring(err):find('parameter 1', 1, true), err)
    local after = session.pool:stats()
    assert.are.equal(before.acquired, after.acquired)
    assert.are.equal(1, after.in_use)   -- only this file's held conn
  end)

  it('raises for an array nested deeper than 6 levels, naming the parameter', function()
    local deep = { 1 }
    for _ = 1, 6 do deep = { deep } end
    local ok, err = pcall(session.conn.query, session.conn, 'select $1::int[]', deep)
    assert.is_false(ok)
    assert.truthy(tostring(err):find('parameter 1', 1, true), err)
  end)
end)
