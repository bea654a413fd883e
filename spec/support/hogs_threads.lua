-- Run by lthreads for spec/hogs_spec.lua: threads 1..N each check out a
-- connection ROUNDS times from the one line marked below, with a query on
-- it; the final run (index 0) reports the pool's hogs as
-- "site|count|held|total;..." and the line it expected.
--   lthreads N hogs_threads.lua ROUNDS DSN
local index, rounds, dsn = ...
local pgpool = require("pgpool")
rounds = tonumber(rounds)

local pool = pgpool.configure{
  name = "hogs-threads", conninfo = dsn, max = 2, track_hogs = true, log_level = "error",
}

if index == 0 then
  local parts = {}
  for _, h in ipairs(assert(pool:hogs(100))) do
    parts[#parts + 1] = string.format("%s|%d|%d|%.6f", h.site, h.count, h.held, h.total)
  end
  pgpool.shutdown_all{ timeout = 2 }
  return table.concat(parts, ";")
end

for _ = 1, rounds do
  local conn = assert(pool:acquire())   -- THE SITE
  assert(conn:query("select 1"))
  conn:release()
end
return "ok"
