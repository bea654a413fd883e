-- max_shared: one cap for a pool across the process that configured it and
-- every process forked afterwards (nginx's master and workers), through
-- shared memory; a process that dies gives its connections' slots back.
local helpers = require("spec.support.helpers")
local pgpool = require("pgpool")
local lfork = require("lfork")

-- Run fn in a forked child; its exit status is 0 when fn returns true.
local function in_child(fn)
  io.stdout:flush()
  io.stderr:flush()
  local pid = lfork.fork()
  if pid == 0 then
    local ok, result = pcall(fn)
    if not ok then io.stderr:write("child: ", tostring(result), "\n") end
    os.exit(ok and result == true and 0 or 1)
  end
  return pid
end

describe("max_shared", function()
  local pool, held

  before_each(function()
    pool = pgpool.configure{
      name = "shared", conninfo = helpers.dsn(), max = 4, max_shared = 3, log_level = "off",
    }
    held = assert(pool:acquire())
  end)

  after_each(function()
    if held then held:release() end
    pgpool.shutdown_all{ timeout = 1 }
  end)

  it("caps the connections of the parent and its forked children together", function()
    assert.are.equal(1, pool:stats().shared_used)
    local child = in_child(function()
      local st = pool:stats()
      if st.total ~= 0 or st.shared_used ~= 1 then return false end
      local a, b = pool:acquire{ timeout = 2 }, pool:acquire{ timeout = 2 }
      if not (a and b) then return false end
      -- 3 of 3 in use across the two processes: a third waits and times out
      local c, msg, code = pool:acquire{ timeout = 0.3 }
      if c or code ~= "timeout" or not msg:find("3/3 in use across processes", 1, true) then
        io.stderr:write("child: ", tostring(msg), "\n")
        return false
      end
      return true        -- a normal exit closes a and b and gives their slots back
    end)
    assert.are.equal(0, lfork.wait(child))
    assert.are.equal(1, pool:stats().shared_used)
    assert.are.equal(1, pool:stats().total)
  end)

  it("takes back the slots of a child that was killed", function()
    local child = in_child(function()
      assert(pool:acquire()) ; assert(pool:acquire())
      os.execute("kill -9 " .. lfork.getpid())
      return false
    end)
    assert.are.equal(128 + 9, lfork.wait(child))
    assert.are.equal(3, pool:stats().shared_used)     -- still counted for the dead child
    local a = assert(pool:acquire{ timeout = 1 })      -- reclaimed on demand
    local b = assert(pool:acquire{ timeout = 1 })
    assert.are.equal(3, pool:stats().shared_used)
    a:release()
    b:release()
  end)

  it("serves a waiter when another process gives a slot back", function()
    local child = in_child(function()
      local a, b = assert(pool:acquire()), assert(pool:acquire())
      a:query("select pg_sleep(0.5)")
      a:release()
      b:release()
      return true
    end)
    assert.is_true(helpers.wait_until(function() return pool:stats().shared_used == 3 end, 3, 0.01))
    local started = helpers.now()
    local conn, msg = pool:acquire{ timeout = 5 }
    assert.truthy(conn, msg)
    assert.is_true(helpers.now() - started >= 0.2)
    conn:release()
    assert.are.equal(0, lfork.wait(child))
  end)

  it("rejects a max_shared below 1, naming the option", function()
    local ok, err = pcall(pgpool.configure, { name = "shared-bad", max_shared = 0 })
    assert.is_false(ok)
    assert.matches("max_shared", err)
  end)
end)
