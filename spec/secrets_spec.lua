-- A password never leaves pgpool: not in the error of a failed connect, nor
-- in the pool's tostring, stats, metrics or log lines, whatever the shape of
-- the conninfo that carries it (malformed ones included).
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

local function dump(v, out)
  out = out or {}
  if type(v) == 'table' then
    for k, x in pairs(v) do
      out[#out + 1] = tostring(k)
      dump(x, out)
    end
  else
    out[#out + 1] = tostring(v)
  end
  return out
end

local function assert_secret_kept(secret, ...)
  local text = table.concat(dump({ ... }), '\n')
  assert.falsy(text:find(secret, 1, true), 'the secret "' .. secret .. '" leaked in:\n' .. text)
end

describe('a password in the conninfo', function()
  local lines
  local start, finish = helpers.spec_isolation(pgpool, function(captured) lines = captured end)
  before_each(start)
  after_each(finish)

  local port = os.getenv('PGPOOL_TEST_PORT') or '5432'
  local cases = {
    { 'a malformed URI query value', 'postgresql://u@127.0.0.1/db?password=hunter2%ZZsecret', { 'hunter2', 'ZZsecret' } },
    { 'a URI password with a slash', 'postgresql://u:hunter2/secret@127.0.0.1/db', { 'hunter2', 'secret@' } },
    { 'a key=value password with a stray word', 'host=127.0.0.1 password=hunter2 secret', { 'hunter2', 'secret' } },
    { 'a wrong password in a valid URL', 'postgresql://pgpool_pw:hunter2secret@127.0.0.1:' .. port .. '/pgpool_test', { 'hunter2' } },
    { 'a quoted key=value password', "host=127.0.0.1 port=1 password='hunter2 secret' dbname=x", { 'hunter2' } },
  }
  for i, case in ipairs(cases) do
    local what, conninfo, secrets = case[1], case[2], case[3]
    it('is never echoed: ' .. what, function()
      local pool = pgpool.configure{ name = 'pw-case-' .. i, conninfo = conninfo, max = 1, min = 0,
        connect_timeout = 2, log_level = 'debug' }
      local conn, msg, code, info = pool:acquire{ timeout = 3 }
      assert.is_nil(conn)
      assert.are.equal('connect', code)
      assert.is_true(#msg > 0)
      assert.is_true(#helpers.log_lines(lines, 'connection error') >= 1, 'no log line for the failure')
      for _, secret in ipairs(secrets) do
        assert_secret_kept(secret, msg, info, tostring(pool), pool:stats(), pgpool.metrics(), lines)
      end
    end)
  end

  it('echoes no part of a password that holds quotes in a conninfo libpq cannot parse', function()
    -- libpq quotes the token as it is: "user"SecretTail%zz" once paired
    -- "user" (a keyword) and let SecretTail through outside the quotes
    for _, conninfo in ipairs{
      'postgresql://u@127.0.0.1/db?password=user"SecretTail%zz',
      'postgresql://u@127.0.0.1/db?password=/"SecretTail%zz',
      'host=127.0.0.1 password=x"SecretTail',
    } do
      local pool = pgpool.configure{ name = 'pw-quotes', conninfo = conninfo, max = 1,
        connect_timeout = 2, log_level = 'off' }
      local _, msg, code = pool:acquire{ timeout = 3 }
      assert.are.equal('connect', code)
      assert.is_nil(msg:find('SecretTail', 1, true), msg)
      assert.is_nil(msg:find('Tail', 1, true), msg)
      pool:shutdown()
    end
  end)

  it('names the malformed option, never its value', function()
    local pool = pgpool.configure{ name = 'pw-port', conninfo = 'postgresql://u:hunter2/secret@127.0.0.1/db',
      max = 1, connect_timeout = 2, log_level = 'off' }
    local _, msg = pool:acquire{ timeout = 3 }
    assert.truthy(msg:find('port', 1, true), msg)
  end)
end)
