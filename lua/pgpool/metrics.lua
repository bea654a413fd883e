-- pgpool.metrics: a process's pools as plain data (snapshot) and as the
-- Prometheus text exposition (render), for one process or for the
-- snapshots of several (an nginx adapter gathers its workers').
--
-- render works on stats() tables only, live or after a JSON round trip:
-- numbers are printed so that a cjson-decoded snapshot (integers come back
-- as floats, floats with 14 significant digits) gives the same text.
-- Every family passes `promtool check metrics`: counters end in _total,
-- units are in the names, histograms have cumulative buckets up to +Inf.

local core = require("pgpool.core")
local health = require("pgpool.health")

local error, type, pairs, ipairs, tostring = error, type, pairs, ipairs, tostring
local concat, sort = table.concat, table.sort
local floor, huge = math.floor, math.huge
local format = string.format

local metrics = {}

-- This process's pools as plain data (a cjson-encodable table), for
-- collecting several processes' figures in one place (the nginx workers'):
-- { pid = n, time = epoch seconds, pools = { stats() + health [+ history] } }.
function metrics.snapshot(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'pgpool.snapshot' (options must be a table, got " .. type(opts) .. ")", 2)
  end
  local with_history = opts and opts.history
  local pools = {}
  for _, name in ipairs(core.pool_names()) do
    local p = core.pool(name)
    if p then
      local st = p:stats()
      st.health = health.of(p)
      if with_history then st.history = p:history() end
      st.hogs = p:hogs()   -- nil unless the pool tracks hogs
      pools[#pools + 1] = st
    end
  end
  sort(pools, function(a, b) return a.name < b.name end)
  return { pid = core.pid(), time = os.time(), pools = pools }
end

-- A number as the exposition shows it, the same before and after a JSON
-- round trip: whole numbers without a fraction, others with the 14
-- significant digits cjson keeps.
local function num(v)
  if v ~= v then return "NaN" end
  if v == huge then return "+Inf" end
  if v == -huge then return "-Inf" end
  if v == floor(v) and v > -1e15 and v < 1e15 then return format("%d", v) end
  return format("%.14g", v)
end
metrics.number = num

local function label(value)
  return (tostring(value):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local HEALTH_LEVEL = { ok = 0, warning = 1, critical = 2 }

-- Gauges and counters of one figure per pool: name, type, help, and the
-- stats() field (or a function of the stats table). A pool without the
-- figure (max_shared off, server_slots not known yet) has no series.
local SINGLE = {
  { "connections_open", "gauge", "Connections open: idle, in use and connecting.", "total" },
  { "connections_idle", "gauge", "Connections idle in the pool.", "idle" },
  { "connections_in_use", "gauge", "Connections checked out.", "in_use" },
  { "connections_connecting", "gauge", "Connections being opened.", "connecting" },
  { "connections_waiting", "gauge", "Callers waiting for a connection.", "waiting" },
  { "connections_max", "gauge", "The pool's cap (max).", "max" },
  { "connections_min", "gauge", "Connections kept open when idle (min).", "min" },
  { "connections_limit", "gauge", "The effective cap (below max while the server refuses for want of slots).",
    "limit" },
  { "connections_max_shared", "gauge", "The cap across processes (max_shared).", "max_shared" },
  { "connections_shared_used", "gauge", "Connections open across processes under max_shared.", "shared_used" },
  { "server_slots", "gauge",
    "Connections the server allows ordinary roles (max_connections - superuser_reserved_connections).",
    "server_slots" },
  { "health_status", "gauge", "health(): 0 ok, 1 warning, 2 critical.",
    function(st) return st.health and HEALTH_LEVEL[st.health.status] end },
  { "wait_seconds_max", "gauge", "Longest acquire wait over the last 60 s.", "wait_time_max_recent" },
  { "connect_backoff_seconds", "gauge", "The current backoff step between connection attempts (0: none).",
    "backoff" },
  { "acquired_total", "counter", "Connections handed out.", "acquired" },
  { "acquired_waited_total", "counter", "Acquires that found no idle connection and waited.", "acquired_waited" },
  { "released_total", "counter", "Checkouts ended.", "released" },
  { "created_total", "counter", "Connections opened.", "created" },
  { "closed_total", "counter", "Connections closed.", "closed" },
  { "timeouts_total", "counter", "Acquires that timed out.", "timeouts" },
  { "connect_attempts_total", "counter", "Connection attempts.", "connect_attempts" },
  { "connect_errors_total", "counter", "Connection attempts that failed.", "connect_errors" },
  { "retries_total", "counter", "Statements run again on a new connection (retries).", "retries" },
  { "leaked_total", "counter", "Connections garbage-collected without release.", "leaked" },
  { "queries_total", "counter", "Statements run.", "queries" },
  { "query_errors_total", "counter", "Statements that failed.", "query_errors" },
  { "slow_queries_total", "counter", "Statements slower than slow_query.", "slow_queries" },
  { "rollbacks_total", "counter", "Rollbacks on release.", "rollbacks" },
  { "wait_seconds_total", "counter", "Time spent acquiring connections.", "wait_time_total" },
  { "query_seconds_total", "counter", "Time spent in statements.", "query_time_total" },
}

-- Counters split by a label: name, help, label, and { label value, field }.
local LABELLED = {
  { "connections_closed_total", "Connections closed, by reason.", "reason", {
    { "idle", "closed_idle" }, { "lifetime", "closed_lifetime" }, { "broken", "closed_broken" },
    { "discarded", "closed_discarded" }, { "lent", "closed_lent" }, { "shutdown", "closed_shutdown" },
  } },
  { "acquire_rejected_total", "Acquires refused at once: full (max_waiting), shutdown, connect (an attempt's error).",
    "reason", {
    { "full", "full_rejects" }, { "shutdown", "shutdown_rejects" }, { "connect", "connect_rejects" },
  } },
}

local HISTOGRAMS = {
  { "acquire_wait_seconds", "Time from acquire to a connection handed out.", "acquire_wait" },
  { "query_duration_seconds", "Time a statement (or a pipeline) took.", "query" },
  { "connect_duration_seconds", "Time a successful connection attempt took.", "connect" },
  { "connection_hold_seconds", "Time from acquire to release.", "hold" },
}

-- The pools of a list of snapshots, each { stats, pid }, by pool then pid.
local function gather(snapshots)
  local all = {}
  for _, snap in ipairs(snapshots) do
    for _, st in ipairs(snap.pools or {}) do
      all[#all + 1] = { stats = st, pid = snap.pid or st.pid }
    end
  end
  sort(all, function(a, b)
    if a.stats.name ~= b.stats.name then return a.stats.name < b.stats.name end
    return a.pid < b.pid
  end)
  return all
end

-- The text of every pool of the snapshots (default: this process's).
function metrics.render(snapshots)
  if snapshots ~= nil and type(snapshots) ~= "table" then
    error("bad argument #1 to 'pgpool.metrics' (snapshots must be a table, got " .. type(snapshots) .. ")", 2)
  end
  local all = gather(snapshots or { metrics.snapshot() })
  local out = {}
  local function family(name, kind, help, lines)
    if #lines == 0 then return end
    out[#out + 1] = format("# HELP pgpool_%s %s", name, help)
    out[#out + 1] = format("# TYPE pgpool_%s %s", name, kind)
    for _, line in ipairs(lines) do out[#out + 1] = line end
  end
  local function series(name, one, extra, value)
    return format('pgpool_%s{pool="%s",pid="%s"%s} %s', name, label(one.stats.name), num(one.pid),
      extra or "", num(value))
  end

  for _, f in ipairs(SINGLE) do
    local name, kind, help, field = f[1], f[2], f[3], f[4]
    local lines = {}
    for _, one in ipairs(all) do
      local value
      if type(field) == "function" then value = field(one.stats) else value = one.stats[field] end
      if type(value) == "number" then lines[#lines + 1] = series(name, one, nil, value) end
    end
    family(name, kind, help, lines)
  end
  for _, f in ipairs(LABELLED) do
    local name, help, key, values = f[1], f[2], f[3], f[4]
    local lines = {}
    for _, one in ipairs(all) do
      for _, v in ipairs(values) do
        local value = one.stats[v[2]]
        if type(value) == "number" then
          lines[#lines + 1] = series(name, one, format(',%s="%s"', key, v[1]), value)
        end
      end
    end
    family(name, "counter", help, lines)
  end
  local lines = {}
  for _, one in ipairs(all) do
    local classes, names = one.stats.connect_errors_by_class or {}, {}
    for class in pairs(classes) do names[#names + 1] = tostring(class) end
    sort(names)
    for _, class in ipairs(names) do
      lines[#lines + 1] = series("connect_errors_by_class_total", one, format(',class="%s"', label(class)),
        classes[class])
    end
  end
  family("connect_errors_by_class_total", "counter",
    "Connection attempts that failed, by SQLSTATE class (timeout, connect: no SQLSTATE).", lines)
  for _, f in ipairs(HISTOGRAMS) do
    local name, help, field = f[1], f[2], f[3]
    lines = {}
    for _, one in ipairs(all) do
      local h = one.stats.histograms and one.stats.histograms[field]
      if h then
        for i, bound in ipairs(h.bounds) do
          lines[#lines + 1] = series(name .. "_bucket", one, format(',le="%s"', num(bound)), h.counts[i])
        end
        lines[#lines + 1] = series(name .. "_bucket", one, ',le="+Inf"', h.count)
        lines[#lines + 1] = series(name .. "_sum", one, nil, h.sum)
        lines[#lines + 1] = series(name .. "_count", one, nil, h.count)
      end
    end
    family(name, "histogram", help, lines)
  end
  return concat(out, "\n") .. "\n"
end

return metrics
