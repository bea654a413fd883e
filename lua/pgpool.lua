-- pgpool: one PostgreSQL connection pool per process, for Lua.
--
-- This facade adds to the C core (pgpool.core): option checks and defaults
-- (validated here, in one place), the module-level shortcuts that act on the
-- pool named "default" (configured from the environment on first use),
-- transaction/with; health and metrics are lua/pgpool/health.lua's and
-- lua/pgpool/metrics.lua's.
--
-- Misuse raises "bad argument #n to '<function as the user called it>'
-- (...)" at the caller's line, here as in C. The C functions the facade
-- calls on the user's behalf come from core._facade, registered to name
-- themselves as the user called them (pgpool.query, p:query); they report
-- one frame up, so they are called here without a tail call.

local core = require("pgpool.core")
local health = require("pgpool.health")
local metrics = require("pgpool.metrics")

local error, type, pairs, ipairs, select, tostring = error, type, pairs, ipairs, select, tostring
local pcall, xpcall, setmetatable, rawget = pcall, xpcall, setmetatable, rawget
local concat = table.concat
local floor, huge = math.floor, math.huge
local format = string.format
local getenv = os.getenv
local running = coroutine.running
local unpack = table.unpack or unpack
local traceback = debug.traceback

local pgpool = {
  _VERSION = core._VERSION,
  null = core.null,
  bytea = core.bytea,
  on_log = core.on_log,
  close_on_signals = core.close_on_signals,
}

local pool_methods = core.pool_methods
local conn_methods = core.conn_methods
local facade = core._facade
local commit = facade.commit

-- Raise for argument n of the function the user called as `name`; level as
-- error()'s, counted from the function calling arg_error.
local function arg_error(level, name, n, message)
  error(format("bad argument #%d to '%s' (%s)", n, name, message), level + 1)
end

-- Options ----------------------------------------------------------------

local DEFAULTS = {
  name            = "default",
  conninfo        = nil,
  max             = 20,
  min             = 0,
  idle_timeout    = 30,
  acquire_timeout = 10,
  connect_timeout = 10,
  query_timeout   = 0,
  max_lifetime    = 1800,
  max_waiting     = 0,
  statement_cache = 0,
  slow_query      = 1,
  leak_timeout    = 0,
  log_level       = "warn",
  max_shared      = 0,
  track_hogs      = false,
  transaction_pooling = false,
}

-- kind of each option: "string", "count" (integer >= 0), "seconds" (>= 0),
-- "boolean", "sql" (a SQL string or a list of them), "health" (health.lua)
local OPTION_KINDS = {
  name = "string", conninfo = "string", log_level = "level",
  max = "count", min = "count", max_waiting = "count", statement_cache = "count",
  idle_timeout = "seconds", acquire_timeout = "seconds", connect_timeout = "seconds",
  query_timeout = "seconds", max_lifetime = "seconds", slow_query = "seconds",
  leak_timeout = "seconds",
  replicas = "conninfo list", max_shared = "count", on_connect = "sql",
  track_hogs = "boolean", transaction_pooling = "boolean", health = "health",
}

-- The most connections one pool may have: far above what one PostgreSQL
-- server serves well, and a bound on the memory a pool takes (its slots
-- are allocated up front).
local MAX_CONNECTIONS = 10000

local LOG_LEVELS = { debug = true, info = true, warn = true, error = true, off = true }

local function has_nul(s)
  return s:find("\0", 1, true) ~= nil
end

-- What is wrong with option key = value (as "option 'key' must be ..."),
-- or nil.
local function option_problem(key, value)
  local kind = OPTION_KINDS[key]
  local function bad(message) return format("option '%s' %s", key, message) end
  if kind == nil then
    return format("unknown option '%s'", tostring(key))
  elseif kind == "string" then
    if type(value) ~= "string" then return bad("must be a string, got " .. type(value)) end
    if has_nul(value) then return bad("must not contain a NUL byte") end
  elseif kind == "conninfo list" then
    if type(value) ~= "table" then return bad("must be a list of conninfo strings") end
    local n = 0
    for _ in pairs(value) do n = n + 1 end
    if n ~= #value then return bad("must be a list (1..n) of conninfo strings") end
    for i = 1, #value do
      if type(value[i]) ~= "string" then
        return bad(format("entry %d must be a conninfo string, got %s", i, type(value[i])))
      end
      if has_nul(value[i]) then return bad(format("entry %d must not contain a NUL byte", i)) end
    end
  elseif kind == "health" then
    return health.option_problem(value)
  elseif kind == "boolean" then
    if type(value) ~= "boolean" then return bad("must be a boolean, got " .. type(value)) end
  elseif kind == "sql" then
    -- a script, or a list of statements run in order
    local list = type(value) == "table" and value or { value }
    local n = 0
    for _ in pairs(list) do n = n + 1 end
    if n ~= #list or n == 0 then return bad("must be a SQL string or a list (1..n) of them") end
    for i = 1, n do
      if type(list[i]) ~= "string" then return bad("must be a SQL string or a list of them, got " .. type(list[i])) end
      if has_nul(list[i]) then return bad("must not contain a NUL byte") end
    end
  elseif kind == "level" then
    if not LOG_LEVELS[value] then return bad("must be one of debug, info, warn, error, off") end
  else
    if type(value) ~= "number" or value ~= value then return bad("must be a number, got " .. type(value)) end
    if value < 0 or value == huge then return bad("must be a finite number >= 0") end
    if kind == "count" and value ~= floor(value) then return bad("must be a whole number") end
    if kind == "count" and value > 2147483647 then return bad("must be <= 2147483647") end
  end
end

-- The complete, checked options of a configure call; misuse raises at the
-- line that called pgpool.configure (which called normalize).
local function normalize(opts)
  local function misuse(message) arg_error(4, "pgpool.configure", 1, message) end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then misuse("options must be a table, got " .. type(opts)) end
  local cfg = {}
  for key, value in pairs(DEFAULTS) do cfg[key] = value end
  for key, value in pairs(opts) do
    local problem = option_problem(key, value)
    if problem then misuse(problem) end
    cfg[key] = value
  end
  if cfg.max < 1 then misuse("option 'max' must be >= 1") end
  if cfg.max > MAX_CONNECTIONS then misuse(format("option 'max' must be <= %d", MAX_CONNECTIONS)) end
  if cfg.max_shared > MAX_CONNECTIONS then
    misuse(format("option 'max_shared' must be <= %d", MAX_CONNECTIONS))
  end
  if cfg.min > cfg.max then misuse("option 'min' must be <= max") end
  if cfg.name == "" then misuse("option 'name' must not be empty") end
  if opts.max_shared ~= nil and cfg.max_shared < 1 then
    misuse("option 'max_shared' must be >= 1 (or nil for no cross-process cap)")
  end
  if type(cfg.on_connect) == "table" then cfg.on_connect = concat(cfg.on_connect, ";\n") end
  cfg.health = health.complete(cfg.health)
  return cfg
end

-- Pools --------------------------------------------------------------------

-- In nginx's init phase (the master process) nothing may connect: the
-- housekeeping (and the min top-up) starts in each worker on first use.
local function in_nginx_master()
  local ngx = rawget(_G, "ngx")
  return type(ngx) == "table" and type(ngx.get_phase) == "function"
    and ngx.get_phase() == "init"
end

-- replicas (read-only pools "<name>/replica-<i>" beside this one) are
-- configured, used by acquire{ read_only = true } and shut down with it, in C.
function pgpool.configure(opts)
  local cfg = normalize(opts)
  cfg.defer_housekeeping = in_nginx_master()
  return core.configure(cfg)
end

pgpool.pool = core.pool
pgpool.shutdown_all = function(opts)
  local timeout = opts
  if type(opts) == "table" then timeout = opts.timeout end
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then
    arg_error(2, "pgpool.shutdown_all", 1, "timeout must be a number >= 0 (math.huge: no limit), got "
      .. tostring(timeout))
  end
  return core.shutdown_all(timeout)
end

local default_pool

-- The "default" pool: configured on first use from PGPOOL_URL, DATABASE_URL,
-- or libpq's PG* variables. After its shutdown, nil, msg, "shutdown" until
-- it is configured again.
local function get_default()
  local p = default_pool
  if p and not p:is_shut_down() then return p end
  local found, msg, code = core.pool("default")
  if found then
    default_pool = found
    return found
  end
  if code == "shutdown" then return nil, msg, code end
  default_pool = pgpool.configure{ conninfo = getenv("PGPOOL_URL") or getenv("DATABASE_URL") }
  return default_pool
end

-- transaction / with ----------------------------------------------------------

local ISOLATION = {
  ["serializable"] = "SERIALIZABLE",
  ["repeatable read"] = "REPEATABLE READ",
  ["read committed"] = "READ COMMITTED",
  ["read uncommitted"] = "READ UNCOMMITTED",
}
local TRANSACTION_OPTIONS = { isolation = true, read_only = true, deferrable = true, timeout = true }

-- The BEGIN statement of transaction `name`'s options (argument 2).
local function begin_statement(opts, name)
  if opts == nil then return "BEGIN" end
  if type(opts) ~= "table" then
    arg_error(3, name, 2, "options must be a table, got " .. type(opts))
  end
  for key in pairs(opts) do
    if not TRANSACTION_OPTIONS[key] then
      arg_error(3, name, 2, format("unknown option '%s'", tostring(key)))
    end
  end
  local parts = { "BEGIN" }
  if opts.isolation ~= nil then
    local level = type(opts.isolation) == "string" and ISOLATION[opts.isolation:lower()]
    if not level then
      arg_error(3, name, 2, "option 'isolation' must be one of serializable, "
        .. "repeatable read, read committed, read uncommitted")
    end
    parts[#parts + 1] = "ISOLATION LEVEL " .. level
  end
  for _, key in ipairs{ "read_only", "deferrable" } do
    local value = opts[key]
    if value ~= nil and type(value) ~= "boolean" then
      arg_error(3, name, 2, format("option '%s' must be a boolean", key))
    end
  end
  local timeout = opts.timeout
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then
    arg_error(3, name, 2, "option 'timeout' must be a number >= 0, got " .. tostring(timeout))
  end
  if opts.read_only ~= nil then parts[#parts + 1] = opts.read_only and "READ ONLY" or "READ WRITE" end
  if opts.deferrable ~= nil then parts[#parts + 1] = opts.deferrable and "DEFERRABLE" or "NOT DEFERRABLE" end
  return concat(parts, " ")
end

-- Coroutines (or the main thread) inside a transaction of this Lua state.
local in_transaction = setmetatable({}, { __mode = "k" })
local MAIN = {}

local function pack(...) return { n = select("#", ...), ... } end

-- xpcall's handler for fn in transaction: what fn raised, as raised (a
-- table stays that table), with the traceback of where, in a table marked
-- RAISED. One function for every call: no closure per transaction.
local RAISED = {}
local function caught(err)
  return { [RAISED] = true, err = err,
    trace = traceback(type(err) == "string" and err or "error raised: " .. type(err), 2) }
end

-- The end of transaction: rolled back when fn raised (ok false, then what
-- caught returned) or returned nil, msg, ...; else committed, and fn's
-- results returned. fn's results stay on the stack (no table per call).
local function finish(conn, key, ok, ...)
  in_transaction[key] = nil
  if not ok then
    local err, trace = ..., nil
    if type(err) == "table" and rawget(err, RAISED) then err, trace = err.err, err.trace end
    pcall(conn.exec, conn, "ROLLBACK")
    conn:release()
    -- what fn raised, as raised; where it was raised in info.traceback
    return nil, err, "error", { traceback = trace }
  end
  local n = select("#", ...)
  if n >= 2 and (...) == nil then
    pcall(conn.exec, conn, "ROLLBACK")
    conn:release()
    local _, msg, code = ...
    return nil, msg, code
  end
  local done, committed, msg, code, info = pcall(commit, conn)
  conn:release()
  if not done then return nil, tostring(committed), "closed" end
  if committed == nil and info and info.outcome_unknown then
    -- COMMIT was sent and the connection failed before its answer: the
    -- transaction may have committed. Not to be retried blindly.
    info.sqlstate = "08007"
    return nil, "transaction outcome unknown: the connection was lost after COMMIT was sent ("
      .. tostring(msg) .. ")", "08007", info
  end
  if committed == nil then return nil, msg, code, info end
  if not committed then
    return nil, "transaction rolled back: a statement in it failed", "25P02"
  end
  if n == 0 then return true end
  return ...
end

-- transaction and with, as the user called them (`name`): pool:transaction,
-- or pgpool.transaction through its shortcut. Both callers reach them by a
-- tail call, so that level 2 is the user's line: they acquire through the
-- facade's acquire (core._facade), which looks there for the line that
-- made the checkout (track_hogs) and reports misuse there.
local function transaction(pool, fn, opts, name)
  if type(fn) ~= "function" then
    arg_error(2, name, 1, "fn must be a function, got " .. type(fn))
  end
  local begin = begin_statement(opts, name)
  local key = running() or MAIN
  if in_transaction[key] then
    error(name .. ": already inside a transaction in this coroutine "
      .. "(nested transactions are not supported; use the conn you were given)", 2)
  end
  local conn, msg, code, info = facade.acquire(pool, opts and opts.timeout)
  if not conn then return nil, msg, code, info end
  local ok
  ok, msg, code, info = conn:exec(begin)
  if not ok then
    conn:release()
    return nil, msg, code, info
  end
  in_transaction[key] = true
  return finish(conn, key, xpcall(fn, caught, conn))
end

-- The end of with: fn's results, or what it raised raised again.
local function with_done(conn, ok, ...)
  conn:release()
  if not ok then error((...), 0) end
  return ...
end

local WITH_OPTIONS = { timeout = "number", read_only = "boolean" }

local function with(pool, fn, opts, name)
  if type(fn) ~= "function" then
    arg_error(2, name, 1, "fn must be a function, got " .. type(fn))
  end
  -- acquire's options, checked here so that a mistake names `name`
  if opts ~= nil and type(opts) ~= "table" then
    arg_error(2, name, 2, "options must be a table, got " .. type(opts))
  end
  for key, value in pairs(opts or {}) do
    local kind = WITH_OPTIONS[key]
    if not kind then arg_error(2, name, 2, format("unknown option '%s'", tostring(key))) end
    if type(value) ~= kind or (kind == "number" and not (value >= 0)) then
      arg_error(2, name, 2, format("option '%s' must be a %s, got %s", key,
        kind == "number" and "number >= 0" or kind, tostring(value)))
    end
  end
  local conn, msg, code, info = facade.acquire(pool, opts)
  if not conn then return nil, msg, code, info end
  return with_done(conn, pcall(fn, conn))
end

-- pool:copy_in / pool:copy_out: the connection's, on a connection of the
-- pool for the one call.
local function copy_with(method)
  return function(pool, sql, arg)
    local conn, msg, code, info = pool:acquire()
    if not conn then return nil, msg, code, info end
    local results = pack(pcall(conn[method], conn, sql, arg))
    conn:release()
    if not results[1] then error(results[2], 0) end
    return unpack(results, 2, results.n)
  end
end
-- pool:listen(channel, ...): LISTEN/NOTIFY on a connection of its own
-- (lua/pgpool/listener.lua, loaded on first use).
function pool_methods.listen(pool, ...)
  return require("pgpool.listener")(pool, ...)
end

pool_methods.copy_in = copy_with("copy_in")
pool_methods.copy_out = copy_with("copy_out")

function pool_methods.transaction(pool, fn, opts)
  return transaction(pool, fn, opts, "pool:transaction")
end

function pool_methods.with(pool, fn, opts)
  return with(pool, fn, opts, "pool:with")
end

-- pipeline ---------------------------------------------------------------------

-- conn:pipeline(function(p) p:query(sql, ...) ... end, { isolate = true })
-- sends every statement in one go and returns their results in order; each
-- entry is a result, or { error = msg, code = code, info = {...} }.
function conn_methods.pipeline(conn, fn, opts)
  if type(fn) ~= "function" then
    arg_error(2, "conn:pipeline", 1, "fn must be a function, got " .. type(fn))
  end
  local isolate = false
  if opts ~= nil then
    if type(opts) ~= "table" then
      arg_error(2, "conn:pipeline", 2, "options must be a table, got " .. type(opts))
    end
    for key, value in pairs(opts) do
      if key ~= "isolate" then
        arg_error(2, "conn:pipeline", 2, format("unknown option '%s'", tostring(key)))
      end
      if type(value) ~= "boolean" then
        arg_error(2, "conn:pipeline", 2, "option 'isolate' must be a boolean")
      end
      isolate = value
    end
  end
  local batch = {}
  local builder = {}
  function builder.query(_, sql, ...)
    if type(sql) ~= "string" then
      arg_error(2, "p:query", 1, "sql must be a string, got " .. type(sql))
    end
    batch[#batch + 1] = { n = select("#", ...), sql, ... }
    return #batch
  end
  fn(builder)
  -- Misuse in a statement (a NUL byte, a parameter it cannot send) is
  -- found here, and reported as p:query's at the conn:pipeline line.
  local results, msg, code, info = facade.run_pipeline(conn, batch, isolate)
  return results, msg, code, info
end

-- health / metrics (lua/pgpool/health.lua, lua/pgpool/metrics.lua) -----------

pool_methods.health = health.of
pgpool.snapshot = metrics.snapshot
pgpool.metrics = metrics.render

-- Typed values -------------------------------------------------------------------

-- Type names pgpool.decoder takes besides OIDs: the types the codec knows
-- and the common ones it leaves as text.
local TYPE_OIDS = {
  json = 114, jsonb = 3802, numeric = 1700, text = 25, varchar = 1043, uuid = 2950,
  date = 1082, time = 1083, timestamp = 1114, timestamptz = 1184, interval = 1186,
}
for _, entry in ipairs(core._type_table().scalars) do TYPE_OIDS[entry.name] = entry.oid end

-- pgpool.decoder(type, fn): in this Lua state, columns of `type` (an OID,
-- or a name in TYPE_OIDS) come back as fn(text) (NULL stays pgpool.null);
-- fn nil restores the default. Arrays of the type are not affected.
function pgpool.decoder(type_, fn)
  local oid = type_
  if type(type_) == "string" then
    oid = TYPE_OIDS[type_]
    if not oid then
      arg_error(2, "pgpool.decoder", 1, format("unknown type name '%s' (give its OID)", type_))
    end
  elseif type(type_) ~= "number" or type_ ~= floor(type_) or type_ <= 0 or type_ > 4294967295 then
    arg_error(2, "pgpool.decoder", 1, "type must be a type OID or name, got " .. tostring(type_))
  end
  if fn ~= nil and type(fn) ~= "function" then
    arg_error(2, "pgpool.decoder", 2, "fn must be a function or nil, got " .. type(fn))
  end
  core.set_decoder(oid, fn)
end

-- lua-cjson, when installed: an instance of its own, so the settings of
-- the application's cjson are left alone.
local json_codec
local function cjson_instance()
  if json_codec then return json_codec end
  local ok, cjson = pcall(require, "cjson")
  if not ok then return nil, "lua-cjson is not installed" end
  json_codec = cjson.new and cjson.new() or cjson
  return json_codec
end

-- pgpool.use_json(on): json and jsonb columns come back as Lua values
-- through lua-cjson (JSON null as pgpool.null, the cjson.null sentinel);
-- off by default. true, or nil, msg without lua-cjson.
function pgpool.use_json(on)
  local cjson, msg = cjson_instance()
  if not cjson then return nil, msg end
  local decode = on ~= false and cjson.decode or nil
  pgpool.decoder("json", decode)
  pgpool.decoder("jsonb", decode)
  return true
end

-- pgpool.json(value): value as JSON text, the parameter of a $n::jsonb.
function pgpool.json(value)
  local cjson = assert(cjson_instance())
  return cjson.encode(value)
end

-- Module-level shortcuts on the "default" pool --------------------------------

-- The C methods behind pgpool.query and the rest: misuse is named
-- pgpool.query (core._facade), and reported one frame up, past this one.
local function on_default(method)
  local call = facade[method]
  return function(...)
    local p, msg, code = get_default()
    if not p then return nil, msg, code end
    local a, b, c, d = call(p, ...)   -- not a tail call (see the top)
    return a, b, c, d
  end
end

for _, method in ipairs{ "acquire", "query", "exec", "stats", "history", "hogs" } do
  pgpool[method] = on_default(method)
end

for _, method in ipairs{ "copy_in", "copy_out", "listen" } do
  pgpool[method] = function(...)
    local p, msg, code = get_default()
    if not p then return nil, msg, code end
    return pool_methods[method](p, ...)
  end
end

function pgpool.transaction(fn, opts)
  local p, msg, code = get_default()
  if not p then return nil, msg, code end
  return transaction(p, fn, opts, "pgpool.transaction")
end

function pgpool.with(fn, opts)
  local p, msg, code = get_default()
  if not p then return nil, msg, code end
  return with(p, fn, opts, "pgpool.with")
end

function pgpool.health()
  local p, msg, code = get_default()
  if not p then return nil, msg, code end
  return p:health()
end

-- Shut the default pool down (a no-op when it was never configured).
function pgpool.shutdown(opts)
  local p = default_pool
  if not p or p:is_shut_down() then p = core.pool("default") end
  if not p then return true end
  local ok, msg = facade.shutdown(p, opts)   -- not a tail call (see the top)
  return ok, msg
end

-- The dashboard page (pgpool.dashboard), for a process to serve itself:
-- its data URL answers with pgpool.snapshot{ history = true } as JSON.
-- Required here, on first call: pgpool.dashboard needs nothing of pgpool.
function pgpool.dashboard_html(opts)
  return require("pgpool.dashboard").html(opts)
end

return pgpool
