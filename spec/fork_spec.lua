-- Fork-safety: a forked child starts with empty pools, can use them, and
-- never touches, closes or sends anything on its parent's connections.
local helpers = require("spec.support.helpers")
local pgpool = require("pgpool")
local lfork = require("lfork")

describe("a child process forked while the parent holds connections", function()
  local pool, held, log_start

  before_each(function()
    log_start = helpers.peer_log_size()
    pool = pgpool.configure{ name = "forky", conninfo = helpers.dsn(), max = 4 }
  end)

  after_each(function()
    if held then held:release() end
    held = nil
    pgpool.shutdown_all{ timeout = 1 }
  end)

  it("starts with an empty pool, uses its own connections, and leaves the parent's alone", function()
    held = assert(pool:acquire())
    local held_pid = held:backend_pid()
    local idle = assert(pool:acquire())
    local idle_pid = idle:backend_pid()
    idle:release()
    assert.are.equal(2, pool:stats().total)
    assert.is_true(helpers.wait_until(function() return #pool:history() > 0 end, 3))

    io.stdout:flush()
    io.stderr:flush()
    local child = lfork.fork()
    if child == 0 then
      -- In the child: every failure becomes a distinct exit status.
      local code = 0
      local ok, err = pcall(function()
        local st = pool:stats()
        if st.total ~= 0 or st.idle ~= 0 or st.in_use ~= 0 then code = 10 return end
        -- its figures start afresh too: no parent's acquires, history or window
        if st.histograms.acquire_wait.count ~= 0 or #pool:history() ~= 0
          or st.window.acquire_wait.count ~= 0 then code = 16 return end
        if pcall(held.query, held, "select 1") then code = 11 return end   -- inherited: dead
        local conn = pool:acquire()
        if not conn then code = 12 return end
        local pid = conn:backend_pid()
        if pid == held_pid or pid == idle_pid then code = 13 return end
        local res = conn:query("select 40 + 2 as x")
        if not res or res[1].x ~= 42 then code = 14 return end
        conn:release()
        if pool:stats().total ~= 1 then code = 15 return end
      end)
      if not ok then
        io.stderr:write("child: ", tostring(err), "\n")
        code = 20
      end
      os.exit(code, true)   -- a normal exit: pgpool closes the child's own connection
    end

    local status = lfork.wait(child)
    assert.are.equal(0, status)

    -- The parent's connections still work: the held one and the idle one.
    local res = assert(held:query("select 1 as one"))
    assert.are.equal(1, res[1].one)
    local again = assert(pool:acquire())
    assert.are.equal(idle_pid, again:backend_pid())
    assert.are.equal(2, assert(again:query("select 2 as two"))[1].two)
    again:release()

    if helpers.via_pgbouncer() then
      -- PgBouncer's clients, both still there; it logged no client gone
      -- without a Terminate (the child's own said goodbye).
      assert.are.equal(2, helpers.count_backends())
      local log = helpers.peer_log_since(log_start)
      assert.is_nil(log:find(helpers.PEER_EOF, 1, true), log)
      return
    end
    -- Their backends are alive and the server logged nothing about them.
    local alive = helpers.psql(string.format(
      "select count(*) from pg_stat_activity where pid in (%d, %d)", held_pid, idle_pid))
    assert.are.equal("2", alive)
    local log = helpers.peer_log_since(log_start)
    assert.is_nil(log:find("unexpected EOF", 1, true), log)
    assert.is_nil(log:find("could not receive data", 1, true), log)
    assert.is_nil(log:find("%[" .. held_pid .. "%]"), log)
    assert.is_nil(log:find("%[" .. idle_pid .. "%]"), log)
  end)
end)
