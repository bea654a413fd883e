-- One source for every Lua ABI: the module compiles without a warning for
-- Lua 5.1, 5.3, 5.4 and LuaJIT, exports only luaopen_pgpool_core, and loads
-- and queries under each interpreter that is installed.
local helpers = require("spec.support.helpers")

local function sh(cmd)
  local pipe = assert(io.popen(cmd .. " 2>&1; echo \"exit=$?\""))
  local out = pipe:read("*a")
  pipe:close()
  local status = tonumber(out:match("exit=(%d+)%s*$"))
  return status, out:gsub("exit=%d+%s*$", "")
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

describe("the C module", function()
  if os.getenv("PGPOOL_TEST_RUNTIME") ~= "lua5.4" then
    pending("builds every ABI once, under the lua5.4 run")
    return
  end

  local ABIS = {
    { lua = "lua5.1", headers = "/usr/include/lua5.1/lua.h", interpreter = "/usr/bin/lua5.1" },
    { lua = "lua5.3", headers = "/usr/include/lua5.3/lua.h", interpreter = "/usr/bin/lua5.3" },
    { lua = "lua5.4", headers = "/usr/include/lua5.4/lua.h", interpreter = "/usr/bin/lua5.4" },
    { lua = "luajit", headers = "/usr/include/luajit-2.1/lua.h", interpreter = "/usr/bin/luajit" },
  }

  for _, abi in ipairs(ABIS) do
    it("compiles for " .. abi.lua .. " with -Werror and exports one symbol", function()
      if not exists(abi.headers) then
        pending(abi.headers .. " not installed")
        return
      end
      local dir = os.tmpname()
      os.remove(dir)
      local status, out = sh(string.format(
        "make --no-print-directory LUA=%s BUILD=%s CFLAGS='-O2 -Werror' module", abi.lua, dir))
      assert.are.equal(0, status, out)
      local so = dir .. "/pgpool/core.so"
      local _, symbols = sh("nm -D --defined-only " .. so .. " | awk '{print $3}' | grep -v '^_'")
      assert.are.equal("luaopen_pgpool_core", (symbols:gsub("%s+$", "")))
      if exists(abi.interpreter) then
        local code = string.format(
          "package.path='lua/?.lua;'..package.path package.cpath=%q..package.cpath "
          .. "local p = require('pgpool').configure{conninfo=%q, log_level='off'} "
          .. "io.write(p:query('select 40 + 2 as x')[1].x)",
          dir .. "/?.so;", helpers.dsn())
        local rc, answer = sh(abi.interpreter .. " -e " .. helpers.shquote(code))
        assert.are.equal(0, rc, answer)
        assert.are.equal("42", answer)
      end
      sh("rm -rf " .. dir)
    end)
  end
end)
