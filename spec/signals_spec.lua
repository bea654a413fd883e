-- close_on_signals(): SIGTERM and SIGINT close idle connections cleanly, then
-- end the process as the signal would have.
local helpers = require("spec.support.helpers")

-- Run a Lua snippet in a child interpreter that signals itself; returns the
-- shell's exit status ($?) for it.
local function run_child(signal_name)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(string.format([[
    package.path = %q
    package.cpath = %q
    local pgpool = require("pgpool")
    local lfork = require("lfork")
    local pool = pgpool.configure{ conninfo = %q, log_level = "off" }
    local a, b, c = pool:acquire(), pool:acquire(), pool:acquire()
    a:release() b:release() c:release()
    assert(pgpool.close_on_signals())
    -- From another process, after a moment: os.execute itself ignores
    -- SIGINT while its command runs. Then spin (no system() call) until
    -- the signal ends us.
    os.execute("(sleep 0.2; kill -%s " .. lfork.getpid() .. ") &")
    local deadline = os.time() + 5
    while os.time() < deadline do end
    os.exit(0)
  ]], package.path, package.cpath, helpers.dsn(), signal_name))
  f:close()
  local pipe = assert(io.popen(helpers.lua_command() .. " " .. script .. " >/dev/null 2>&1; echo $?"))
  local status = tonumber(pipe:read("*a"):match("%d+"))
  pipe:close()
  os.remove(script)
  return status
end

describe("close_on_signals", function()
  for _, case in ipairs{ { "TERM", 15 }, { "INT", 2 } } do
    it("closes idle connections with a Terminate and dies of SIG" .. case[1], function()
      local log_start = #helpers.server_log()
      local status = run_child(case[1])
      assert.are.equal(128 + case[2], status)
      assert.is_true(helpers.wait_until(function() return helpers.count_backends("pgpool") == 0 end, 3))
      local log = helpers.server_log():sub(log_start + 1)
      assert.is_nil(log:find("unexpected EOF", 1, true), log)
    end)
  end
end)
