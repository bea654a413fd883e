-- Hostile input: what a caller, or a value pgpool did not expect, can hand
-- it, and what pgpool does with it. Never wrong, never vague:
--
--   * the codec's type tables agree with the server's pg_type;
--   * a value the codec cannot read exactly stays its text or is refused,
--     never turned into another number.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local core = require 'pgpool.core'
local values = require 'spec.support.values'

local null = pgpool.null
local HAS_INTEGERS, int8, check, show = values.HAS_INTEGERS, values.int8, values.check, values.show

local pool, conn

setup(function()
  pool = pgpool.configure(helpers.pool_options('hostile_input_spec', { max = 3 }))
end)

teardown(function()
  pgpool.shutdown_all{ timeout = 1 }
end)

before_each(function()
  conn = assert(pool:acquire())
end)

after_each(function()
  if conn then conn:release() end
  conn = nil
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

if HAS_INTEGERS then
  describe('parameters at the integer limits', function()
    it('sends math.mininteger and math.maxinteger exactly', function()
      local row = assert(conn:query('select $1::int8 as lo, $2::int8 as hi', math.mininteger, math.maxinteger))[1]
      check(math.mininteger, row.lo, 'integer')
      check(math.maxinteger, row.hi, 'integer')
    end)
  end)
end
