-- Hostile input: what a caller, or a value pgpool did not expect, can hand
-- it, and what pgpool does with it. Never wrong, never vague:
--
--   * the codec's type tables agree with the server's pg_type.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local core = require 'pgpool.core'
local values = require 'spec.support.values'

local null = pgpool.null
local check = values.check

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

