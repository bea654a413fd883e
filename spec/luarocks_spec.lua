-- The LuaRocks rock (rockspec/lua-pgpool-scm-1.rockspec), checked for the
-- ABI of the runtime running this spec: lua5.4 installs for Lua 5.4, luajit
-- for 5.1. Each build runs, in a temporary copy of the repository (so no
-- build artefact lands in the checkout), a `luarocks make` line exactly as
-- the README or rockspec/README-install.md writes it, with LUAROCKS_CONFIG
-- naming an empty temporary tree as the only one; the installed rock is
-- then loaded by a fresh interpreter that sees that tree and nothing else.
local helpers = require 'spec.support.helpers'

local shquote, run = helpers.shquote, helpers.run

local ROCKSPEC = 'rockspec/lua-pgpool-scm-1.rockspec'

-- This runtime: its interpreter and the Lua version LuaRocks builds for.
local runtime = os.getenv('PGPOOL_TEST_RUNTIME')
if not runtime or runtime == '' then
  runtime = jit and 'luajit' or ('lua' .. _VERSION:match('%d+%.%d+'))
end
local lua_version = runtime == 'luajit' and '5.1'
  or assert(runtime:match('^lua(%d+%.%d+)$'), 'unknown runtime ' .. runtime)

-- The `luarocks ... make` lines of a document's code blocks (a trailing
-- backslash joins the next line; comments dropped) that build for this
-- Lua version: the lines a reader copies.
local function documented_lines(path)
  local lines, block, pending = {}, false, nil
  for line in io.lines(path) do
    if line:match('^```') then
      block = not block
    elseif block then
      line = (pending or '') .. line
      pending = nil
      if line:match('\\%s*$') then
        pending = line:gsub('\\%s*$', ' ')
      else
        line = line:gsub('%s+#.*$', ''):gsub('%s+$', '')
        if line:match('^luarocks .* make ') and line:match('%-%-lua%-version ' .. lua_version:gsub('%.', '%%.') .. ' ') then
          lines[#lines + 1] = { doc = path, command = line }
        end
      end
    end
  end
  return lines
end

local builds = {}
for _, doc in ipairs{ 'README.md', 'rockspec/README-install.md' } do
  for _, line in ipairs(documented_lines(doc)) do builds[#builds + 1] = line end
end

local must_run, write_file = helpers.must_run, helpers.write_file

-- The rockspec as a table (rockspecs are Lua assignments).
local function load_rockspec(path)
  local env = {}
  local chunk = assert(loadfile(path, 't', env))
  if setfenv then setfenv(chunk, env) end
  chunk()
  return env
end

-- What a fresh interpreter prints: the version, where both modules came
-- from, and the answer of a real query to the test server.
local PROBE = [[
local pgpool = require("pgpool")
print(pgpool._VERSION)
print(package.searchpath("pgpool", package.path))
print(package.searchpath("pgpool.core", package.cpath))
print(pgpool.configure{conninfo = os.getenv("PGPOOL_TEST_DSN")}:query("select 1+1 as x")[1].x)
]]

describe('the LuaRocks rock under ' .. runtime .. ' (Lua ' .. lua_version .. ' ABI)', function()
  local root, tmp

  lazy_setup(function()
    root = must_run('pwd')
    tmp = must_run('mktemp -d "${TMPDIR:-/tmp}/pgpool-rock.XXXXXX"')
    must_run(('mkdir %s/src && tar -C %s --exclude=./build --exclude=./.git -cf - . | tar -C %s/src -xf -')
      :format(shquote(tmp), shquote(root), shquote(tmp)))
    write_file(tmp .. '/probe.lua', PROBE)
  end)

  lazy_teardown(function()
    if tmp and tmp:match('/pgpool%-rock%.') then run('rm -rf ' .. shquote(tmp)) end
  end)

  it('passes luarocks lint, the scm and the release rockspec', function()
    must_run('luarocks lint ' .. ROCKSPEC)
    must_run('luarocks lint rockspec/lua-pgpool-' .. require('pgpool')._VERSION:match('[%d.]+$') .. '-1.rockspec')
  end)

  it('has a release rockspec that differs from scm only in version and source', function()
    local release = 'rockspec/lua-pgpool-' .. require('pgpool')._VERSION:match('[%d.]+$') .. '-1.rockspec'
    local a, b = load_rockspec(ROCKSPEC), load_rockspec(release)
    assert.are.equal('scm-1', a.version)
    assert.are.equal(require('pgpool')._VERSION:match('[%d.]+$') .. '-1', b.version)
    assert.are.equal('MIT', b.description.license)
    assert.truthy(b.source.tag, 'the release rockspec names its tag')
    a.version, b.version, a.source, b.source = nil, nil, nil, nil
    assert.are.same(a, b)
  end)

  it('documents a luarocks line for this Lua version', function()
    assert.truthy(#builds >= 2, 'README.md and rockspec/README-install.md each give one')
  end)

  it('installs every Lua module under lua/ (the rockspec lists them)', function()
    local listed = load_rockspec(ROCKSPEC).build.install.lua
    local files = must_run('cd lua && find . -name "*.lua" | sort')
    local count = 0
    for file in files:gmatch('[^\n]+') do
      local module = file:gsub('^%./', ''):gsub('%.lua$', ''):gsub('/init$', ''):gsub('/', '.')
      assert.are.equal('lua/' .. file:gsub('^%./', ''), listed[module],
        'build.install.lua in the rockspec does not install module ' .. module)
      count = count + 1
    end
    local entries = 0
    for _ in pairs(listed) do entries = entries + 1 end
    assert.are.equal(count, entries, 'build.install.lua names a file that is not under lua/')
  end)

  for i, build in ipairs(builds) do
    describe(build.doc .. "'s `" .. build.command .. '`', function()
      local tree, log, installed

      lazy_setup(function()
        tree = ('%s/tree%d'):format(tmp, i)
        local config = ('%s/luarocks-config%d.lua'):format(tmp, i)
        write_file(config, ('rocks_trees = { { name = "spec", root = %q } }\n'):format(tree))
        local rc
        rc, log = run(('cd %s/src && LUAROCKS_CONFIG=%s %s')
          :format(shquote(tmp), shquote(config), build.command))
        installed = (rc == 0)
      end)

      it('installs into the configured tree alone', function()
        assert(installed, 'luarocks make failed:\n' .. log)
        assert.matches('lua%-pgpool scm%-1 is now installed in ' .. tree:gsub('%p', '%%%0'), log)
      end)

      it('exports only luaopen_pgpool_core from the installed core.so', function()
        assert(installed, 'not installed (see the install test)')
        local so = ('%s/lib/lua/%s/pgpool/core.so'):format(tree, lua_version)
        local exported = {}
        for kind, name in must_run('nm -D --defined-only ' .. shquote(so)):gmatch('%x+ (%u) ([%w_]+)') do
          if not name:match('^_') then exported[#exported + 1] = name .. ' (' .. kind .. ')' end
        end
        assert.are.same({ 'luaopen_pgpool_core (T)' }, exported)
      end)

      it('serves a fresh ' .. runtime .. ' from that tree alone: _VERSION and a real query', function()
        assert(installed, 'not installed (see the install test)')
        local lua_path = ('%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua')
          :format(tree, lua_version, tree, lua_version)
        local lua_cpath = ('%s/lib/lua/%s/?.so'):format(tree, lua_version)
        local suffix = lua_version:gsub('%.', '_')
        -- No ";;" in the paths: the system's and the checkout's modules stay out.
        -- stdout only: pgpool logs to stderr.
        local rc, out = run(('cd %s && env -u LUA_INIT -u LUA_INIT_%s LUA_PATH=%s LUA_PATH_%s=%s LUA_CPATH=%s LUA_CPATH_%s=%s %s probe.lua 2>probe.err')
          :format(shquote(tmp), suffix, shquote(lua_path), suffix, shquote(lua_path),
                  shquote(lua_cpath), suffix, shquote(lua_cpath), runtime))
        local _, stderr = run('cat ' .. shquote(tmp .. '/probe.err'))
        assert.are.equal(0, rc, 'probe failed:\n' .. out .. '\n' .. stderr)
        local lines = {}
        for line in out:gmatch('[^\n]+') do lines[#lines + 1] = line end
        assert.are.same({
          require('pgpool')._VERSION,
          ('%s/share/lua/%s/pgpool.lua'):format(tree, lua_version),
          ('%s/lib/lua/%s/pgpool/core.so'):format(tree, lua_version),
          '2',
        }, lines, 'stderr:\n' .. stderr)
      end)
    end)
  end
end)
