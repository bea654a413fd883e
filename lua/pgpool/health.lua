-- pgpool.health: how a pool is doing, judged over a short window of its
-- figures rather than one instant (README "Observing", health rules).
--
-- The pool keeps, in C, a ring of per-second figures (the waiting gauge at
-- each second's sample, the acquires' waits, timeouts and refusals) and
-- sums the last `window` seconds of it into stats().window; the
-- thresholds are the pool's `health` option, so every Lua state of the
-- process judges alike. This file checks that option and turns stats()
-- (and the replicas' health) into { status, reasons, ... }. Pure Lua over
-- plain tables: judge() works as well on a stats table from a snapshot.

local core = require("pgpool.core")

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local concat = table.concat
local floor, huge = math.floor, math.huge
local format = string.format

local health = {}

-- The thresholds, each 0 to turn its rule off (README).
health.DEFAULTS = {
  window = 10,            -- seconds judged (1..300)
  waiting_ratio = 0.5,    -- warning: callers waited in this share of them
  wait_p95 = 0.5,         -- warning: acquire wait p95 above it (seconds)
  timeouts = 1,           -- critical: this many acquires timed out or refused
  connect_failures = 3,   -- critical: this many connects failed in a row
}

-- The window the pool keeps figures for (POOL_WINDOW in src/pool.h).
local MAX_WINDOW = 300

-- The fewest acquires in the window for a p95 to mean anything: one in
-- twenty is the 5 %.
health.P95_MIN_ACQUIRES = 20

local KINDS = {
  window = "window", waiting_ratio = "ratio", wait_p95 = "seconds",
  timeouts = "count", connect_failures = "count",
}

-- What is wrong with the health option, as "option 'health...' ...", or
-- nil.
function health.option_problem(value)
  if type(value) ~= "table" then
    return "option 'health' must be a table, got " .. type(value)
  end
  for key, v in pairs(value) do
    local kind = KINDS[key]
    local function bad(message) return format("option 'health.%s' %s", key, message) end
    if kind == nil then return format("unknown option 'health.%s'", tostring(key)) end
    if type(v) ~= "number" or v ~= v then return bad("must be a number, got " .. type(v)) end
    if kind == "window" then
      if v < 1 or v > MAX_WINDOW or v ~= floor(v) then
        return bad(format("must be a whole number from 1 to %d (seconds)", MAX_WINDOW))
      end
    elseif kind == "ratio" then
      if v < 0 or v > 1 then return bad("must be from 0 to 1 (0: off)") end
    else
      if v < 0 or v == huge then return bad("must be a finite number >= 0") end
      if kind == "count" and (v ~= floor(v) or v > 2147483647) then
        return bad("must be a whole number <= 2147483647")
      end
    end
  end
end

-- The option completed with the defaults (a new table).
function health.complete(value)
  local out = {}
  for key, v in pairs(health.DEFAULTS) do out[key] = v end
  for key, v in pairs(value or {}) do out[key] = v end
  return out
end

-- The q-quantile of a histogram from stats() ({ bounds, counts cumulative,
-- count }), interpolated inside its bucket as Prometheus's
-- histogram_quantile does; the highest bound when it falls above every
-- bound; nil for an empty histogram.
function health.quantile(h, q)
  if not h or h.count == 0 then return nil end
  local rank = q * h.count
  local below, lower = 0, 0
  for i, upper in ipairs(h.bounds) do
    local seen = h.counts[i]
    if seen >= rank and seen > below then
      return lower + (upper - lower) * (rank - below) / (seen - below)
    end
    below, lower = seen, upper
  end
  return h.bounds[#h.bounds]
end

local LEVEL = { ok = 0, warning = 1, critical = 2 }

-- health() of a stats() table: { status, reasons, ... }; replicas, if
-- given, is the list of the replicas' health.
function health.judge(st, replicas)
  local o = st.health_options or health.DEFAULTS
  local w = st.window
  local reasons, status = {}, "ok"
  local function raise(level, message)
    if LEVEL[level] > LEVEL[status] then status = level end
    reasons[#reasons + 1] = message
  end

  if w and o.waiting_ratio > 0 and w.waiting_seconds > 0
      and w.waiting_seconds >= o.waiting_ratio * w.seconds then
    raise("warning", format("callers waited for a connection in %d of the last %d s (%d waiting now)",
      w.waiting_seconds, w.seconds, st.waiting))
  end
  local p95 = w and w.acquire_wait.count >= health.P95_MIN_ACQUIRES
    and health.quantile(w.acquire_wait, 0.95) or nil
  if p95 and o.wait_p95 > 0 and p95 > o.wait_p95 then
    raise("warning", format("acquire wait p95 %.3g s over the last %d s (%d acquires; wait_p95 %g s)",
      p95, w.seconds, w.acquire_wait.count, o.wait_p95))
  end
  local refused = w and w.timeouts + w.full_rejects or 0
  if refused > 0 and o.timeouts > 0 then
    local parts = {}
    if w.timeouts > 0 then parts[#parts + 1] = format("%d acquire(s) timed out", w.timeouts) end
    if w.full_rejects > 0 then
      parts[#parts + 1] = format("%d refused for max_waiting", w.full_rejects)
    end
    raise(refused >= o.timeouts and "critical" or "warning",
      format("%s in the last %d s", concat(parts, " and "), w.seconds))
  end
  if st.connect_failures > 0 then
    local held = st.total - st.connecting
    local critical = held == 0
      or (o.connect_failures > 0 and st.connect_failures >= o.connect_failures)
    raise(critical and "critical" or "warning",
      format("last %d connection attempt(s) failed%s; next in up to %g s", st.connect_failures,
        held == 0 and " and no connection is open" or "", st.backoff))
  end
  if st.limit < st.max then
    raise("warning", format("limit lowered to %d of max %d: %s", st.limit, st.max,
      st.limit_reason or ""))
  end
  local cap = st.max_shared or st.max
  if st.server_slots and cap > st.server_slots then
    raise("warning", format("max %d exceeds the server's %d slots", cap, st.server_slots))
  end
  if st.shut_down then raise("critical", "pool is shut down") end
  -- A replica in trouble makes its primary a warning, never critical:
  -- read_only acquires fall back to the primary, which still serves.
  local listed
  if replicas and #replicas > 0 then
    listed = {}
    for i, r in ipairs(replicas) do
      listed[i] = { name = r.name, status = r.status, reasons = r.reasons }
      if r.status ~= "ok" then
        raise("warning", format("replica '%s': %s: %s", r.name, r.status, concat(r.reasons, "; ")))
      end
    end
  end
  return {
    status = status,
    reasons = reasons,
    utilization = (st.in_use + st.connecting) / st.max,
    total = st.total, idle = st.idle, in_use = st.in_use, waiting = st.waiting,
    max = st.max, limit = st.limit, name = st.name,
    window = w and w.seconds, wait_p95 = p95,
    replicas = listed,
  }
end

-- pool:health(): the pool's stats() judged, with its replicas'.
function health.of(pool)
  local st = pool:stats()
  local replicas = {}
  for i = 1, st.replicas or 0 do
    local name = st.name .. "/replica-" .. i
    local replica, msg = core.pool(name)
    if replica then
      replicas[#replicas + 1] = health.judge(replica:stats())
    else
      replicas[#replicas + 1] = { name = name, status = "critical", reasons = { msg } }
    end
  end
  return health.judge(st, replicas)
end

return health
