-- replicas: read-only pools beside a pool, used by acquire{ read_only = true }.
local helpers = require("spec.support.helpers")
local pgpool = require("pgpool")

local function app_name(conn)
  return assert(conn:query("select current_setting('application_name') as a"))[1].a
end

describe("replicas", function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it("serves read_only acquires from the replicas in turn and the rest from the primary", function()
    local pool = pgpool.configure{
      name = "rw", conninfo = helpers.dsn(), log_level = "off",
      replicas = { helpers.dsn() .. " application_name=replica_a", helpers.dsn() .. " application_name=replica_b" },
    }
    local seen = {}
    for _ = 1, 4 do
      local conn = assert(pool:acquire{ read_only = true, timeout = 2 })
      seen[#seen + 1] = app_name(conn)
      conn:release()
    end
    table.sort(seen)
    assert.are.same({ "replica_a", "replica_a", "replica_b", "replica_b" }, seen)
    local primary = assert(pool:acquire{ read_only = false })
    assert.are.equal("pgpool", app_name(primary))
    primary:release()
    assert.are.equal(2, pgpool.pool("rw/replica-1"):stats().acquired)
    assert.are.equal(2, pgpool.pool("rw/replica-2"):stats().acquired)
  end)

  it("skips a replica that cannot connect, and falls back to the primary when none can", function()
    local pool = pgpool.configure{
      name = "rw-bad", conninfo = helpers.dsn(), log_level = "off", connect_timeout = 1,
      replicas = { "host=127.0.0.1 port=1 dbname=nope" },
    }
    local conn = assert(pool:acquire{ read_only = true })
    assert.are.equal("pgpool", app_name(conn))
    conn:release()
    assert.are.equal(1, pgpool.pool("rw-bad/replica-1"):stats().connect_errors)
  end)

  -- A replica whose queue is full (max_waiting) cannot serve: the primary
  -- does, as for a replica that cannot connect (it used to be "full").
  it("falls back to the primary when the replica's queue is full", function()
    if not helpers.has_threads() then return pending("luv threads unavailable") end
    local pool = pgpool.configure{
      name = "rw-full", conninfo = helpers.dsn(), log_level = "off", max = 1, max_waiting = 1,
      replicas = { helpers.dsn() .. " application_name=replica_full" },
    }
    local replica = pgpool.pool("rw-full/replica-1")
    local held = assert(pool:acquire{ read_only = true })
    assert.are.equal("replica_full", app_name(held))
    local waiter = helpers.start_thread(function(path, cpath)
      package.path, package.cpath = path, cpath
      local conn = require("pgpool").pool("rw-full/replica-1"):acquire{ timeout = 2 }
      if conn then conn:release() end
    end)
    assert(helpers.wait_until(function() return replica:stats().waiting == 1 end, 5))
    local conn, msg, code = pool:acquire{ read_only = true, timeout = 1 }
    held:release()
    waiter:join()
    assert.is_truthy(conn, tostring(msg) .. " (" .. tostring(code) .. ")")
    assert.are.equal("pgpool", app_name(conn))
    conn:release()
    assert.are.equal(1, replica:stats().full_rejects)
  end)

  it("shuts the replicas down with their pool", function()
    local pool = pgpool.configure{
      name = "rw-down", conninfo = helpers.dsn(), log_level = "off",
      replicas = { helpers.dsn() .. " application_name=replica_c" },
    }
    assert(pool:acquire{ read_only = true }):release()
    assert.is_true(pool:shutdown{ timeout = 1 })
    local _, _, code = pgpool.pool("rw-down/replica-1")
    assert.are.equal("shutdown", code)
  end)

  it("treats the replica list as part of the options: the same list is the same pool, another raises", function()
    local function cfg(replicas)
      return { name = "rw-same", conninfo = helpers.dsn(), log_level = "off", replicas = replicas }
    end
    local a = pgpool.configure(cfg{ helpers.dsn() .. " application_name=replica_s" })
    local b = pgpool.configure(cfg{ helpers.dsn() .. " application_name=replica_s" })
    assert(a:query("select 1"))
    assert.are.equal(1, b:stats().acquired)
    local ok, err = pcall(pgpool.configure, cfg{ helpers.dsn() .. " application_name=other" })
    assert.is_false(ok)
    assert.matches("already configured", err)
    ok, err = pcall(pgpool.configure, cfg(nil))
    assert.is_false(ok)
    assert.matches("already configured", err)
  end)

  it("rejects replicas that are not a list of conninfo strings, naming the option", function()
    for _, bad in ipairs{ "host=x", { 1 }, { a = "host=x" } } do
      local ok, err = pcall(pgpool.configure, { name = "rw-x", replicas = bad })
      assert.is_false(ok)
      assert.matches("replicas", err)
    end
    assert.has_error(function()
      pgpool.configure{ name = "rw-y", conninfo = helpers.dsn(), log_level = "off" }:acquire{ read_only = 1 }
    end, nil)
  end)

  it("leaves no replica pool behind when configure fails on the primary's options", function()
    local pool = pgpool.configure{ name = "orph", conninfo = helpers.dsn(), log_level = "off" }
    local ok = pcall(pgpool.configure, {
      name = "orph", conninfo = helpers.dsn(), log_level = "off", max = 3, min = 1,
      replicas = { helpers.dsn() .. " application_name=orphan_replica" },
    })
    assert.is_false(ok)
    assert.is_nil(pgpool.pool("orph/replica-1"))
    pool:shutdown()
    helpers.sleep(0.3)
    assert.are.equal(0, helpers.count_backends("orphan_replica"))
  end)

  it("leaves no replica pool behind when a later replica cannot be configured", function()
    -- replica 2's name is taken by a pool with other options
    local taken = pgpool.configure{ name = "orph2/replica-2", conninfo = helpers.dsn(), log_level = "off", max = 1 }
    local ok = pcall(pgpool.configure, {
      name = "orph2", conninfo = helpers.dsn(), log_level = "off", min = 1,
      replicas = { helpers.dsn() .. " application_name=orphan_first", helpers.dsn() },
    })
    assert.is_false(ok)
    assert.is_nil(pgpool.pool("orph2/replica-1"))
    assert.is_nil(pgpool.pool("orph2"))
    taken:shutdown()
    helpers.sleep(0.3)
    assert.are.equal(0, helpers.count_backends("orphan_first"))
  end)
end)
