-- max_shared: one cap for a pool across the process that configured it and
-- every process forked afterwards (nginx's master and workers), through
-- shared memory; a process that dies gives its connections' slots back.
local helpers = require("spec.support.helpers")
local pgpool = require("pgpool")
local lfork = require("lfork")

-- Run fn in a forked child; its exit status is 0 when fn returns true.
-- The child gives its slots back by shutting its pools down, then ends at
-- once: under make test SANITIZE=1, LeakSanitizer's check at a normal exit
-- can crash in a forked child of this threaded process (fork_spec tests
-- the normal exit itself).
local function in_child(fn)
  io.stdout:flush()
  io.stderr:flush()
  local pid = lfork.fork()
  if pid == 0 then
    local ok, result = pcall(fn)
    if not ok then io.stderr:write("child: ", tostring(result), "\n") end
    pgpool.shutdown_all{ timeout = 1 }
    lfork.exit_now(ok and result == true and 0 or 1)
  end
  return pid
end

-- Wait until the file at path says text.
local function file_says(path, text)
  return helpers.wait_until(function() return helpers.read_file(path) == text end, 5, 0.01)
end

-- A child holding 2 connections of pool until killed, once it holds them
-- (it writes "ready" to the file at path).
local function holding_two(pool, path)
  local pid = in_child(function()
    assert(pool:acquire()) ; assert(pool:acquire())
    helpers.write_file(path, "ready")
    helpers.sleep(30)
    return false
  end)
  assert.is_true(file_says(path, "ready"))
  return pid
end

-- Seconds it takes to acquire 2 connections of pool (each within 3 s);
-- they are released.
local function seconds_for_two(pool)
  local started = helpers.now()
  local a = assert(pool:acquire{ timeout = 3 })
  local b = assert(pool:acquire{ timeout = 3 })
  local waited = helpers.now() - started
  a:release()
  b:release()
  return waited
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
      -- 3 of 3 taken across the two processes: a third waits and times out
      local c, msg, code = pool:acquire{ timeout = 0.3 }
      if c or code ~= "timeout" or not msg:find("3/3 taken across processes", 1, true) then
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
    local a = assert(pool:acquire{ timeout = 1 })      -- reclaimed
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

  it("keeps one cap across a shutdown and configure of the same name (nginx's reload)", function()
    -- init_by_lua on a reload: the old workers keep their tokens while the
    -- master shuts the pool down and configures it again
    local ready = helpers.tmpname()
    local child = holding_two(pool, ready)
    -- shut down (letting go of the parent's connection), configure again
    -- with max_shared = cap: the child's 2 still count, the next wait times out
    local function reconfigured_full(cap)
      if held then held:release() end
      held = nil
      pgpool.shutdown_all{ timeout = 1 }
      pool = pgpool.configure{
        name = "shared", conninfo = helpers.dsn(), max = 4, max_shared = cap, log_level = "off",
      }
      assert.are.equal(2, pool:stats().shared_used)
      if cap > 2 then held = assert(pool:acquire{ timeout = 1 }) end
      local c, msg, code = pool:acquire{ timeout = 0.3 }
      assert.is_nil(c)
      assert.are.equal("timeout", code)
      assert.truthy(msg:find(("%d/%d taken across processes"):format(cap, cap), 1, true), msg)
    end
    reconfigured_full(3)
    reconfigured_full(2)     -- another max_shared resizes the same cap
    os.remove(ready)
    os.execute("kill " .. child)
    lfork.wait(child)
  end)

  it("rejects a max_shared below 1, naming the option", function()
    local ok, err = pcall(pgpool.configure, { name = "shared-bad", max_shared = 0 })
    assert.is_false(ok)
    assert.matches("max_shared", err)
  end)
end)

describe("max_shared between two forked processes", function()
  local ready

  before_each(function() ready = helpers.tmpname() end)

  after_each(function()
    os.remove(ready)
    pgpool.shutdown_all{ timeout = 1 }
  end)

  it("lends the idle connections of a process to one waiting for the cap within 1 s", function()
    local pool = pgpool.configure{
      name = "lend", conninfo = helpers.dsn(), max = 2, max_shared = 2, idle_timeout = 30,
      log_level = "off",
    }
    local lender = in_child(function()
      local a, b = pool:acquire(), pool:acquire()
      if not (a and b) then return false end
      a:release()
      b:release()
      helpers.write_file(ready, "ready")
      -- idle: the housekeeper closes both for the waiting process
      if not helpers.wait_until(function() return pool:stats().closed_lent == 2 end, 5, 0.02) then
        io.stderr:write("lender: closed_lent ", pool:stats().closed_lent, "\n")
        return false
      end
      local st = pool:stats()
      return st.total == 0 and st.closed_idle == 0
    end)
    assert.is_true(file_says(ready, "ready"))
    assert.are.equal(2, pool:stats().shared_used)
    local waited = seconds_for_two(pool)
    assert.is_true(waited < 1, ("waited %.3f s for 2 idle connections of another process"):format(waited))
    assert.are.equal(0, lfork.wait(lender))
  end)

  it("gives the whole cap to a survivor within 1 s after the other process is killed", function()
    local pool = pgpool.configure{
      name = "reclaim", conninfo = helpers.dsn(), max = 4, max_shared = 4, log_level = "off",
    }
    local go = helpers.tmpname()
    local victim = holding_two(pool, ready)
    local survivor = in_child(function()
      local held = { pool:acquire(), pool:acquire() }
      if not (held[1] and held[2]) then return false end
      helpers.write_file(go, "holding")
      assert(file_says(go, "go"))
      local started = helpers.now()
      for i = 3, 4 do
        local msg
        held[i], msg = pool:acquire{ timeout = 3 }
        if not held[i] then io.stderr:write("survivor: ", msg, "\n") return false end
      end
      local waited = helpers.now() - started
      if waited >= 1 then io.stderr:write(("survivor waited %.3f s\n"):format(waited)) end
      return waited < 1 and pool:stats().total == 4
    end)
    assert.is_true(file_says(go, "holding"))
    assert.are.equal(4, pool:stats().shared_used)
    os.execute("kill -9 " .. victim)
    assert.are.equal(128 + 9, lfork.wait(victim))
    helpers.write_file(go, "go")
    assert.are.equal(0, lfork.wait(survivor))
    os.remove(go)
  end)

  it("gives a newcomer its fair share of a cap a busy survivor took from a killed process", function()
    local pool = pgpool.configure{
      name = "fair", conninfo = helpers.dsn(), max = 4, max_shared = 4, log_level = "off",
    }
    local victim = holding_two(pool, ready)
    -- the survivor takes the killed process's tokens, then keeps all 4 busy:
    -- each one released and acquired again at once, for 3 s
    local survivor = in_child(function()
      local held = { pool:acquire(), pool:acquire() }
      held[3], held[4] = pool:acquire{ timeout = 5 }, pool:acquire{ timeout = 5 }
      if #held ~= 4 then return false end
      local stop = helpers.now() + 3
      while helpers.now() < stop do
        for i = 1, 4 do
          if held[i] then held[i]:release() end
          held[i] = pool:acquire{ timeout = 0.05 }
          if held[i] then held[i]:query("select 1") end
        end
      end
      local st = pool:stats()
      if st.closed_lent < 2 then io.stderr:write("survivor: closed_lent ", st.closed_lent, "\n") end
      return st.closed_lent >= 2
    end)
    helpers.sleep(0.2)
    os.execute("kill -9 " .. victim)
    assert.are.equal(128 + 9, lfork.wait(victim))
    assert.is_true(helpers.wait_until(function()
      return pool:stats().shared_used == 4
    end, 3, 0.01))
    helpers.sleep(0.3)         -- the survivor busy with all 4
    local waited = seconds_for_two(pool)
    assert.is_true(waited < 1, ("waited %.3f s for a fair share of 2 of 4"):format(waited))
    assert.are.equal(0, lfork.wait(survivor))
  end)
end)
