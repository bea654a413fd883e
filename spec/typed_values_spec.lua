-- Typed values: json/jsonb as Lua values through lua-cjson (opt-in), and
-- a decoder per type for everything else; text stays the default.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local has_cjson, cjson = pcall(require, 'cjson')

describe('typed values', function()
  local pool
  before_each(function() pool = pgpool.configure(helpers.pool_options('typed', { max = 1 })) end)
  after_each(function()
    pgpool.use_json(false)
    pgpool.decoder('numeric', nil)
    pgpool.decoder('timestamptz', nil)
    pgpool.shutdown_all{ timeout = 1 }
  end)

  it('leaves json as text unless asked', function()
    local res = assert(pool:query([[select '{"a":1}'::json as j, '[1,2]'::jsonb as b]]))
    assert.are.equal('{"a":1}', res[1].j)
    assert.are.equal('[1, 2]', res[1].b)
  end)

  it('decodes json and jsonb columns with use_json, NULL and JSON null included', function()
    if not has_cjson then return pending('lua-cjson not installed') end
    assert.is_true(pgpool.use_json())
    local res = assert(pool:query([[select '{"a":1,"b":[true,null]}'::json as j, '[1,"x"]'::jsonb as b,
      null::jsonb as n, 'null'::jsonb as jn, 7 as i]]))
    local row = res[1]
    assert.are.equal(1, row.j.a)
    assert.are.equal(true, row.j.b[1])
    assert.are.equal(pgpool.null, row.j.b[2])
    assert.are.same({ 1, 'x' }, row.b)
    assert.are.equal(pgpool.null, row.n)
    assert.are.equal(pgpool.null, row.jn)
    assert.are.equal(7, row.i)
    -- rows and the default pool too
    for r in pool:acquire():rows([[select '{"k":"v"}'::jsonb as d]]) do assert.are.equal('v', r.d.k) end
  end)

  it('round-trips a Lua table through pgpool.json and $n::jsonb', function()
    if not has_cjson then return pending('lua-cjson not installed') end
    pgpool.use_json()
    local value = { name = 'x', tags = { 'a', 'b' }, n = 3 }
    local res = assert(pool:query('select $1::jsonb as v', pgpool.json(value)))
    assert.are.same(value, res[1].v)
  end)

  it('takes a decoder per type name or OID, and nil restores the default', function()
    pgpool.decoder('numeric', function(text) return { numeric = text } end)
    pgpool.decoder(1184, function(text) return 'ts:' .. text:sub(1, 4) end)
    local res = assert(pool:query("select 1.50::numeric as n, '2026-12-02 10:00+00'::timestamptz as t, null::numeric as z"))
    assert.are.same({ numeric = '1.50' }, res[1].n)
    assert.are.equal('ts:2026', res[1].t)
    assert.are.equal(pgpool.null, res[1].z)
    pgpool.decoder('numeric', nil)
    assert.are.equal('1.50', assert(pool:query('select 1.50::numeric as n'))[1].n)
  end)

  it('returns a decoder error as a raise, with the result freed and the connection fine', function()
    pgpool.decoder('numeric', function() error('cannot decode', 0) end)
    local ok, err = pcall(pool.query, pool, 'select 1.5::numeric as n')
    assert.is_false(ok)
    assert.are.equal('cannot decode', err)
    pgpool.decoder('numeric', nil)
    assert.are.equal(1, assert(pool:query('select 1 as x'))[1].x)
    assert.are.equal(0, pool:stats().in_use)
  end)

  it('refuses what is not a type or a function', function()
    assert.has_error(function() pgpool.decoder('no_such_type', print) end)
    assert.has_error(function() pgpool.decoder(-1, print) end)
    assert.has_error(function() pgpool.decoder(1.5, print) end)
    assert.has_error(function() pgpool.decoder('json', 'x') end)
  end)
end)
