-- pgpool.nginx: the OpenResty adapter. Every nginx worker has its own pools;
-- this module lets any one worker answer for all of them. Each worker
-- publishes pgpool.snapshot{ history = true } (JSON) into a lua_shared_dict
-- every second, under a key of its pid that expires after a few seconds, so
-- a worker that has gone (after a reload, a crash) drops out on its own.
-- The content handlers read every worker's snapshot back:
--
--   dashboard()   the dashboard page (pgpool.dashboard), which polls data()
--   data()        JSON: { time, status, workers = { snapshot, ... }, totals }
--   metrics()     Prometheus text for every worker, each series labelled pid
--   health()      every worker's pool health combined: 503 when any pool is
--                 critical, 200 otherwise, with each worker's detail
--
-- The worker answering publishes itself first, so its own figures are
-- current; the others' are at most `interval` seconds old.
--
--   lua_shared_dict pgpool 4m;
--   init_worker_by_lua_block { require("pgpool.nginx").init_worker() }
--   location = /pgpool/        { content_by_lua_block { require("pgpool.nginx").dashboard() } }
--   location = /pgpool/data    { content_by_lua_block { require("pgpool.nginx").data() } }
--   location = /pgpool/metrics { content_by_lua_block { require("pgpool.nginx").metrics() } }
--   location = /pgpool/health  { content_by_lua_block { require("pgpool.nginx").health() } }
--
-- Needs lua-cjson (OpenResty bundles its fork; Debian: lua-cjson).

local pgpool = require("pgpool")
local dashboard = require("pgpool.dashboard")

local ngx = ngx
local type, pairs, ipairs, next, tostring, pcall, error =
  type, pairs, ipairs, next, tostring, pcall, error
local sort = table.sort
local format = string.format

-- A private cjson instance, so that no setting leaks into the application's
-- cjson: NaN and infinities become null, and an empty list is written [] by
-- OpenResty's fork (the original lua-cjson has no such switch: {}).
local json = require("cjson.safe").new()
pcall(json.encode_invalid_numbers, "null")
if json.encode_empty_table_as_object then json.encode_empty_table_as_object(false) end

local KEY_PREFIX = "snapshot:"
local STATUS_RANK = { ok = 0, warning = 1, critical = 2 }

local settings = { dict = "pgpool", interval = 1, expire = 5 }

local M = {}

local function shared_dict()
  local dict = ngx.shared[settings.dict]
  if not dict then
    error(format("pgpool.nginx: no lua_shared_dict %s in nginx.conf", settings.dict), 3)
  end
  return dict
end

-- Publishing -----------------------------------------------------------------

-- A pool handle's hogs() (when the C core has it) goes into the snapshot,
-- for the dashboard's hogs list.
local function add_hogs(snapshot)
  for _, st in ipairs(snapshot.pools) do
    if st.hogs == nil then
      local pool = pgpool.pool(st.name)
      if pool and type(pool.hogs) == "function" then st.hogs = pool:hogs() end
    end
  end
end

-- Write this worker's snapshot into the dict; true, or nil and why.
function M.publish()
  local snapshot = pgpool.snapshot{ history = true }
  snapshot.published = ngx.now()          -- finer than snapshot.time, for rates
  add_hogs(snapshot)
  local text, err = json.encode(snapshot)
  if not text then return nil, "cannot encode the snapshot: " .. tostring(err) end
  local ok
  ok, err = shared_dict():set(KEY_PREFIX .. snapshot.pid, text, settings.expire)
  if not ok then return nil, "cannot store the snapshot: " .. tostring(err) end
  return true
end

local function publish_on_timer(premature)
  if premature then return end
  local ok, err = M.publish()
  if not ok then ngx.log(ngx.WARN, "pgpool.nginx: ", err) end
end

-- Processes that serve requests: the workers (or the one process of
-- `master_process off`), not the privileged agent.
local function in_serving_worker()
  local ok, process = pcall(require, "ngx.process")
  if ok and type(process) == "table" and process.type then
    local kind = process.type()
    return kind == "worker" or kind == "single"
  end
  return ngx.worker.id() ~= nil
end

local function option_error(message)
  error("bad argument #1 to 'pgpool.nginx.init_worker' (" .. message .. ")", 3)
end

-- init_worker_by_lua*: publish now and every `interval` s (default 1).
-- opts.dict names the lua_shared_dict (default "pgpool"); a snapshot
-- expires after `expire` s (default 5 intervals).
function M.init_worker(opts)
  opts = opts or {}
  if type(opts) ~= "table" then option_error("options must be a table") end
  local interval, expire = opts.interval or 1, opts.expire
  if type(interval) ~= "number" or not (interval > 0 and interval < 3600) then
    option_error("option 'interval' must be seconds, > 0 and < 3600")
  end
  expire = expire or 5 * interval
  if type(expire) ~= "number" or not (expire >= interval and expire < 36000) then
    option_error("option 'expire' must be seconds, >= interval")
  end
  if opts.dict ~= nil and type(opts.dict) ~= "string" then
    option_error("option 'dict' must be the name of a lua_shared_dict")
  end
  settings.dict = opts.dict or settings.dict
  settings.interval, settings.expire = interval, expire
  shared_dict()
  if not in_serving_worker() then return true end
  publish_on_timer(false)
  local ok, err = ngx.timer.every(interval, publish_on_timer)
  if not ok then return nil, "pgpool.nginx: no publishing timer: " .. tostring(err) end
  return true
end

-- exit_worker_by_lua*: this worker's snapshot goes at once.
function M.exit_worker()
  local dict = ngx.shared[settings.dict]
  if dict then dict:delete(KEY_PREFIX .. ngx.worker.pid()) end
end

-- Reading --------------------------------------------------------------------

-- Decoded JSON with the nulls of a pool's figures dropped (they stood for a
-- number JSON cannot hold).
local function decode_snapshot(text)
  local snapshot = json.decode(text)
  if type(snapshot) ~= "table" or type(snapshot.pools) ~= "table" then return nil end
  for _, st in ipairs(snapshot.pools) do
    for field, value in pairs(st) do
      if value == json.null then st[field] = nil end
    end
  end
  return snapshot
end

-- Every live worker's snapshot, this one's fresh, ordered by pid.
function M.snapshots()
  local ok, err = M.publish()
  if not ok then ngx.log(ngx.WARN, "pgpool.nginx: ", err) end
  local dict = shared_dict()
  local list = {}
  for _, key in ipairs(dict:get_keys(0)) do
    if key:sub(1, #KEY_PREFIX) == KEY_PREFIX then
      local text = dict:get(key)
      local snapshot = text and decode_snapshot(text)
      if snapshot then list[#list + 1] = snapshot end
    end
  end
  sort(list, function(a, b) return a.pid < b.pid end)
  return list
end

local function worse(a, b)
  return (STATUS_RANK[b] or 0) > (STATUS_RANK[a] or 0) and b or a
end

-- Figures of one pool name over every worker: numbers are summed, except
-- these, which are the largest (a maximum, or one figure every worker sees
-- alike: the max_shared cap and its use).
local LARGEST = { wait_time_max = true, wait_time_max_recent = true, max_shared = true,
                  shared_used = true, server_slots = true, backoff = true,
                  connect_failures = true, replicas = true }
local NOT_FIGURES = { pid = true, time = true, health_options = true }

-- A table of numbers keyed by name (connect errors by class, histogram
-- buckets), summed key by key; lists (history, hogs) are left out.
local function is_number_map(t)
  if t[1] ~= nil or next(t) == nil then return false end
  for _, v in pairs(t) do
    if type(v) ~= "number" then return false end
  end
  return true
end

local function add_figures(sum, st)
  for field, value in pairs(st) do
    if NOT_FIGURES[field] then
      -- per worker only
    elseif type(value) == "number" then
      local before = sum[field] or 0
      if LARGEST[field] then
        if value > before then sum[field] = value else sum[field] = before end
      else
        sum[field] = before + value
      end
    elseif field == "shut_down" then
      sum.shut_down = sum.shut_down or value
    elseif type(value) == "table" and is_number_map(value) then
      local map = sum[field] or {}
      for k, v in pairs(value) do map[k] = (map[k] or 0) + v end
      sum[field] = map
    end
  end
end

-- One entry per pool name: its figures over every worker, the number of
-- workers, and the worst health status.
function M.totals(snapshots)
  local by_name, list = {}, {}
  for _, snapshot in ipairs(snapshots) do
    for _, st in ipairs(snapshot.pools) do
      local sum = by_name[st.name]
      if not sum then
        sum = { name = st.name, workers = 0, status = "ok" }
        by_name[st.name] = sum
        list[#list + 1] = sum
      end
      sum.workers = sum.workers + 1
      add_figures(sum, st)
      sum.status = worse(sum.status, st.health and st.health.status)
    end
  end
  sort(list, function(a, b) return a.name < b.name end)
  return list
end

-- The worst status of every pool in the list of totals.
local function overall(totals)
  local status = "ok"
  for _, t in ipairs(totals) do status = worse(status, t.status) end
  return status
end

-- Handlers -------------------------------------------------------------------

local function reply(status, content_type, body)
  ngx.status = status
  ngx.header["Content-Type"] = content_type
  ngx.header["Cache-Control"] = "no-store"
  ngx.print(body)
end

local function reply_json(status, value)
  local text, err = json.encode(value)
  if not text then
    return reply(500, "application/json", format('{"error":%q}', tostring(err)))
  end
  reply(status, "application/json", text)
end

local default_page

-- The dashboard page; opts as pgpool.dashboard.html's. Its default data
-- URL, "data", is relative: serve the page at /pgpool/ and data() at
-- /pgpool/data.
function M.dashboard(opts)
  local page
  if opts then
    page = dashboard.html(opts)
  else
    default_page = default_page or dashboard.html()
    page = default_page
  end
  reply(200, "text/html; charset=utf-8", page)
end

function M.data()
  local snapshots = M.snapshots()
  local totals = M.totals(snapshots)
  reply_json(200, { time = ngx.now(), status = overall(totals), workers = snapshots,
                    totals = totals })
end

function M.metrics()
  reply(200, "text/plain; version=0.0.4; charset=utf-8", pgpool.metrics(M.snapshots()))
end

function M.health()
  local status, workers = "ok", {}
  for _, snapshot in ipairs(M.snapshots()) do
    local worker = { pid = snapshot.pid, time = snapshot.time, status = "ok", pools = {} }
    for _, st in ipairs(snapshot.pools) do
      local health = st.health or { status = "ok", reasons = {} }
      health.name = st.name
      worker.pools[#worker.pools + 1] = health
      worker.status = worse(worker.status, health.status)
    end
    status = worse(status, worker.status)
    workers[#workers + 1] = worker
  end
  reply_json(status == "critical" and 503 or 200, { status = status, workers = workers })
end

return M
