-- What the value specs (values_spec, arrays_spec) share: markers for
-- expectations == cannot express, the int8 rule, a printer and a deep,
-- type-exact check, and the session settings that fix the servers' output.
local pgpool = require 'pgpool'
local luassert = require 'luassert'

local values = {}

local null = pgpool.null
local HAS_INTEGERS = math.type ~= nil      -- Lua 5.3+: integer subtype
local huge = math.huge
values.HAS_INTEGERS = HAS_INTEGERS

-- Markers for expectations that == cannot express.
values.NAN = setmetatable({}, { __tostring = function() return 'nan' end })
values.NEG_ZERO = setmetatable({}, { __tostring = function() return '-0.0' end })
values.NIL = setmetatable({}, { __tostring = function() return 'nil' end })
local NAN, NEG_ZERO, NIL = values.NAN, values.NEG_ZERO, values.NIL

-- Every byte value once, in order.
do
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  values.ALL_BYTES = table.concat(t)
end

-- int8 as the contract has it: an integer on 5.3+; on LuaJIT a number when
-- |v| <= 2^53, else the decimal text. `jit` says which one the case expects
-- on LuaJIT, so the spec states the rule instead of re-implementing it.
function values.int8(text, jit)
  if HAS_INTEGERS then
    local v = math.tointeger(tonumber(text))
    assert(v, 'not an integer: ' .. text)
    return v
  end
  if jit == 'string' then return text end
  assert(jit == 'number')
  return tonumber(text)
end

local function show(v)
  if v == null then return 'pgpool.null' end
  if v == NIL then return 'nil' end
  if type(v) == 'string' then
    if #v > 40 then return ('a %d-byte string'):format(#v) end
    return (('%q'):format(v):gsub('\\\n', '\\n'))
  end
  if type(v) == 'table' and getmetatable(v) == nil then
    local parts = {}
    for i = 1, #v do parts[i] = show(v[i]) end
    return '{' .. table.concat(parts, ', ') .. '}'
  end
  return tostring(v)
end
values.show = show

-- Assert that actual is expected: same type and value, tables element by
-- element with no keys besides 1..n; NaN, -0.0 / +0.0 and the integer or
-- float subtype (kind 'integer' or 'float', on 5.3+) checked explicitly.
local function check(expected, actual, kind, where)
  where = where or 'value'
  if expected == NAN then
    assert(type(actual) == 'number' and actual ~= actual,
      where .. ': expected nan, got ' .. show(actual))
  elseif expected == NEG_ZERO then
    assert(type(actual) == 'number' and actual == 0 and 1 / actual == -huge,
      where .. ': expected -0.0, got ' .. show(actual))
  elseif type(expected) == 'table' then
    assert(type(actual) == 'table', where .. ': expected a table, got ' .. show(actual))
    local keys = 0
    for _ in pairs(actual) do keys = keys + 1 end
    assert(keys == #expected, ('%s: expected %d elements, got %d keys (%s)')
      :format(where, #expected, keys, show(actual)))
    for i = 1, #expected do check(expected[i], actual[i], kind, where .. '[' .. i .. ']') end
  else
    assert(type(expected) == type(actual),
      ('%s: expected %s %s, got %s %s'):format(where, type(expected), show(expected),
        type(actual), show(actual)))
    assert(expected == actual, ('%s: expected %s, got %s'):format(where, show(expected), show(actual)))
    if type(expected) == 'number' and expected == 0 and 1 / expected == huge then
      assert(1 / actual == huge, where .. ': expected +0.0, got -0.0')
    end
    if type(expected) ~= 'number' or not HAS_INTEGERS then
      return
    elseif kind == 'integer' then
      assert(math.type(actual) == 'integer', where .. ': expected the integer subtype')
    elseif kind == 'float' then
      assert(math.type(actual) == 'float', where .. ': expected the float subtype')
    end
  end
end
values.check = check

-- One connection held for a whole spec file, with fixed output settings so
-- that literals decode to known text: register session.open with setup and
-- session.close with teardown (busted gives those to spec files only).
-- session.pool and session.conn are set by open; session.value(sql, ...) is the single value `v` (and its row) of
-- `select <expr> as v`.
function values.session(name)
  local session = {}
  function session.open()
    local pool = pgpool.configure{ name = name, conninfo = require('spec.support.helpers').dsn(),
      max = 2, log_level = 'warn' }
    session.pool = pool
    session.conn = assert(pool:acquire())
    assert(session.conn:exec("set timezone to 'UTC'; set datestyle to 'ISO, MDY'; "
      .. "set intervalstyle to 'postgres'; set bytea_output to 'hex'; set extra_float_digits to 1"))
  end
  function session.close()
    if session.conn then session.conn:release() end
    pgpool.shutdown_all{ timeout = 1 }
  end
  function session.value(sql, ...)
    local res, msg, code = session.conn:query(sql, ...)
    assert(res, ('%s: %s (%s)'):format(sql, tostring(msg), tostring(code)))
    luassert.are.equal(1, #res)
    return res[1].v, res[1]
  end
  return session
end

return values
