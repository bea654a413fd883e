-- conn:escape_literal / conn:escape_identifier: the quoted text, interpolated
-- into SQL, reads back as exactly the original string.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local conn
local open, close = helpers.held_connection('escape_spec', { max = 1 },
  function(_, c) conn = c end)
before_each(open)
after_each(close)

-- Strings that need quoting, one way or another.
local STRINGS = {
  { 'a plain word', 'hello' },
  { 'the empty string', '' },
  { 'a single quote', "it's" },
  { 'only single quotes', "''''" },
  { 'a double quote', 'say "hi"' },
  { 'a backslash', [[C:\path\to]] },
  { 'a backslash before a quote', [[\']] },
  { 'a trailing backslash', [[ends with \]] },
  { 'backslash escapes that must stay literal', [[\n\t\x41\\]] },
  { 'an SQL injection attempt', [['); drop table escape_spec; --]] },
  { 'a comment opener', '/* not a comment' },
  { 'unicode (2-, 3- and 4-byte UTF-8)', 'h\195\169llo \226\156\147 \240\159\152\128' },
  { 'a newline, a tab and a carriage return', 'a\nb\tc\rd' },
  { 'a dollar quote', '$$ $tag$' },
  { 'the word NULL', 'NULL' },
  { 'leading and trailing spaces', '  x  ' },
  { 'a long string with every quote kind', ([['"\]]):rep(1000) },
}

describe('conn:escape_literal', function()
  for _, case in ipairs(STRINGS) do
    it(('quotes %s so that it reads back unchanged when interpolated'):format(case[1]), function()
      local quoted = assert(conn:escape_literal(case[2]))
      assert.are.equal('string', type(quoted))
      local res = assert(conn:query('select ' .. quoted .. '::text as v'))
      assert.are.equal(case[2], res[1].v)
    end)
  end

  it("doubles single quotes and uses E'' with doubled backslashes for a backslash", function()
    assert.are.equal("'it''s'", conn:escape_literal("it's"))
    assert.are.equal([[ E'a\\b']], conn:escape_literal([[a\b]]))
  end)

  it('keeps an interpolated injection attempt a plain value (one row, table intact)', function()
    assert(conn:exec('create temp table escape_spec(id int); insert into escape_spec values (1)'))
    local evil = "1'; drop table escape_spec; select '"
    local res = assert(conn:query('select count(*)::int as n from escape_spec where id::text = '
      .. conn:escape_literal(evil)))
    assert.are.equal(0, res[1].n)
    res = assert(conn:query('select count(*)::int as n from escape_spec'))
    assert.are.equal(1, res[1].n)
  end)

  it('returns nil, msg, code for a string that is not valid UTF-8', function()
    local quoted, msg, code = conn:escape_literal('\255\254')
    assert.is_nil(quoted)
    assert.are.equal('string', type(msg))
    assert.truthy(#msg > 0)
    assert.are.equal('string', type(code))
  end)

  it('raises for a non-string argument', function()
    assert.has_error(function() conn:escape_literal({}) end)
    assert.has_error(function() conn:escape_literal() end)
  end)
end)

describe('conn:escape_identifier', function()
  for _, case in ipairs(STRINGS) do
    if case[2] ~= '' then   -- a zero-length identifier is not valid SQL
      it(('quotes %s as an identifier that names exactly that column'):format(case[1]), function()
        local ident = assert(conn:escape_identifier(case[2]))
        assert.are.equal('"', ident:sub(1, 1))
        local res = assert(conn:query('select 1 as ' .. ident))
        assert.are.same({ case[2]:sub(1, 63) }, res.columns)   -- NAMEDATALEN - 1
        assert.are.equal(1, res[1][case[2]:sub(1, 63)])
      end)
    end
  end

  it('doubles double quotes and keeps case', function()
    assert.are.equal('"say ""hi"""', conn:escape_identifier('say "hi"'))
    assert.are.equal('"MixedCase"', conn:escape_identifier('MixedCase'))
  end)

  it('names a table that can be created, filled and read back', function()
    local name = 'Escape "spec" table; drop'
    local ident = assert(conn:escape_identifier(name))
    assert(conn:exec(('create temp table %s (%s int)'):format(ident, conn:escape_identifier('my col'))))
    assert(conn:query(('insert into %s values ($1)'):format(ident), 5))
    local res = assert(conn:query(('select * from %s'):format(ident)))
    assert.are.equal(5, res[1]['my col'])
    res = assert(conn:query('select relname from pg_class where relname = $1', name))
    assert.are.equal(name, res[1].relname)
  end)

  it('raises for a non-string argument', function()
    assert.has_error(function() conn:escape_identifier(nil) end)
  end)
end)

describe('escaping on a released connection', function()
  it('raises "pgpool: connection released"', function()
    local c = conn
    conn = nil
    c:release()
    local ok, err = pcall(c.escape_literal, c, 'x')
    assert.is_false(ok)
    assert.truthy(tostring(err):find('connection released', 1, true), err)
    ok, err = pcall(c.escape_identifier, c, 'x')
    assert.is_false(ok)
    assert.truthy(tostring(err):find('connection released', 1, true), err)
  end)
end)
