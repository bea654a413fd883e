-- Drive the OpenResty example from Lua: start and stop it (nginx.sh), send
-- requests (curl), run ApacheBench while sampling something (the server's
-- connection count), and read the figures back. Used by
-- spec/openresty_spec.lua and examples/openresty/demo.lua; runs on Lua 5.4
-- and LuaJIT, from the repository root.

local harness = {}

local DIR = "examples/openresty"

local function shquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
harness.shquote = shquote

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

-- Run a shell command; returns its exit status (a number) and its stdout
-- without the final newline. (io.popen():close() does not report the status
-- on LuaJIT, hence the printf; it starts a line of its own, since the
-- command's output need not end with one.)
local function run(cmd)
  local p = assert(io.popen(cmd .. '; printf "\\n%d\\n" "$?"', "r"))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.*)\n(%d+)\n$")
  if not body then return nil, out end
  return tonumber(rc), (body:gsub("\n$", ""))
end
harness.run = run

local has_uv, uv = pcall(require, "luv")

local function sleep(s)
  if has_uv then
    uv.sleep(math.floor(s * 1000 + 0.5))
  else
    os.execute("sleep " .. tonumber(s))
  end
end

-- What the example needs on this machine, or nil and what is missing.
function harness.available()
  local missing = {}
  for _, cmd in ipairs{ "nginx", "ab", "curl" } do
    if run("command -v " .. cmd .. " >/dev/null") ~= 0 then missing[#missing + 1] = cmd end
  end
  if not exists("/usr/share/nginx/modules/ngx_http_lua_module.so") then
    missing[#missing + 1] = "lua-nginx-module (libnginx-mod-http-lua)"
  end
  -- the app's JSON, in nginx's LuaJIT
  if run("luajit -e 'require(\"cjson.safe\")' 2>/dev/null") ~= 0 then
    missing[#missing + 1] = "lua-cjson for LuaJIT (lua-cjson)"
  end
  if not exists("build/luajit/pgpool/core.so") then
    missing[#missing + 1] = "build/luajit/pgpool/core.so (make build)"
  end
  if #missing > 0 then return nil, table.concat(missing, ", ") end
  return true
end

local Server = {}
Server.__index = Server

-- Start the example. opts: url (PGPOOL_URL, required), max (per worker,
-- default 10), max_shared (all workers, default none), workers (default 2),
-- threads (default 16). Raises on failure.
function harness.start(opts)
  assert(opts and opts.url, "harness.start: opts.url is required")
  local rc, prefix = run("mktemp -d " .. shquote((os.getenv("TMPDIR") or "/tmp") .. "/pgpool-nginx.XXXXXX"))
  assert(rc == 0 and prefix ~= "", "mktemp failed")
  local self = setmetatable({ prefix = prefix, workers = opts.workers or 2,
                              max = opts.max or 10 }, Server)
  local env = table.concat({
    "PGPOOL_URL=" .. shquote(opts.url),
    "PGPOOL_MAX=" .. self.max,
    "PGPOOL_MAX_SHARED=" .. (opts.max_shared or ""),
    "NGINX_WORKERS=" .. self.workers,
    "NGINX_THREADS=" .. (opts.threads or 16),
  }, " ")
  local out
  rc, out = run(("env %s %s/nginx.sh start %s 2>&1"):format(env, DIR, shquote(prefix)))
  if rc ~= 0 then
    self:stop()
    error("could not start nginx:\n" .. out, 2)
  end
  local vars = read_file(prefix .. "/env") or ""
  self.port = tonumber(vars:match("NGINX_PORT=(%d+)"))
  self.url = "http://127.0.0.1:" .. self.port
  self.error_log_path = prefix .. "/logs/error.log"
  self.pid = tonumber(vars:match("NGINX_PID=(%d+)"))
  return self
end

-- The pids of the worker processes of this nginx (old ones still finishing
-- after a reload included), as a set.
function Server:worker_pids()
  local _, out = run("pgrep -P " .. self.pid)
  local pids = {}
  for pid in out:gmatch("%d+") do pids[tonumber(pid)] = true end
  return pids
end

-- Reload (HUP): the master reads its configuration again (init_by_lua
-- included), starts new workers and stops the old ones gracefully.
function Server:reload()
  assert(run("kill -HUP " .. self.pid) == 0, "kill -HUP failed")
end

-- Stop gracefully (exit_worker_by_lua runs) and remove the prefix. Idempotent.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  run(("%s/nginx.sh stop %s 2>&1"):format(DIR, shquote(self.prefix)))
end

function Server:error_log()
  return read_file(self.error_log_path) or ""
end

local CURL_FORMAT = "\n%{http_code} %{time_total}"

local function parse_curl(out)
  local body, status, seconds = out:match("^(.*)\n(%d+) ([%d.]+)$")
  return tonumber(status), body, tonumber(seconds)
end

-- GET path: status, body, seconds (status nil when nothing answered).
function Server:get(path, timeout)
  local _, out = run(("curl -s -m %d -w %s %s"):format(timeout or 10, shquote(CURL_FORMAT),
    shquote(self.url .. path)))
  return parse_curl(out)
end

-- Run cmd in the background, its stdout (and stderr with `stderr`) to a
-- temporary file. finished() tells whether it is done; output(timeout)
-- waits for it up to timeout s and returns what it wrote.
local function background(cmd, stderr)
  local rc, out = run("mktemp")
  assert(rc == 0)
  local done = out .. ".done"
  os.execute(("(%s >%s %s; touch %s) &"):format(cmd, shquote(out),
    stderr and "2>&1" or "2>/dev/null", shquote(done)))
  local job = {}
  function job.finished() return exists(done) end
  function job.output(timeout)
    for _ = 1, timeout * 50 + 50 do
      if exists(done) then break end
      sleep(0.02)
    end
    local text = read_file(out) or ""
    os.remove(out)
    os.remove(done)
    return text
  end
  return job
end

-- GET path in the background; the returned object's :wait() gives what
-- :get would have.
function Server:get_async(path, timeout)
  local job = background(("curl -s -m %d -w %s %s"):format(timeout or 10,
    shquote(CURL_FORMAT), shquote(self.url .. path)))
  return {
    wait = function() return parse_curl(job.output(timeout or 10)) end,
  }
end

-- ApacheBench in the background: ab -c c on path, -n n requests, or for
-- `seconds` when given (variable lengths accepted: the bodies carry pids and
-- figures). :finished() tells whether it is done; :result() waits for it
-- and returns { complete, failed, non_2xx, ok, rps, p50, p99, output }.
function Server:ab_start(path, n, c, seconds)
  local job = background(("ab -q -l -r -s 30 %s-n %d -c %d %s"):format(
    seconds and ("-t %d "):format(seconds) or "", n, c, shquote(self.url .. path)), true)
  local bench = { finished = job.finished }
  function bench.result()
    local text = job.output(300)               -- at most 5 minutes
    local function num(pattern) return tonumber(text:match(pattern)) end
    local r = {
      output = text,
      complete = num("Complete requests:%s+(%d+)") or 0,
      failed = num("Failed requests:%s+(%d+)") or 0,
      non_2xx = num("Non%-2xx responses:%s+(%d+)") or 0,
      rps = num("Requests per second:%s+([%d.]+)"),
      p50 = num("\n%s+50%%%s+(%d+)"),
      p99 = num("\n%s+99%%%s+(%d+)"),
    }
    r.ok = r.complete - r.failed - r.non_2xx
    if r.ok < 0 then r.ok = 0 end
    return r
  end
  return bench
end

-- ApacheBench: ab -n n -c c on path. While it runs, sample() is called every
-- `interval` s (default 0.02) and the largest number it returned is kept.
-- Returns what ab_start's result() does, with peak and samples.
function Server:ab(path, n, c, sample, interval)
  local bench = self:ab_start(path, n, c)
  local peak, samples = 0, 0
  for _ = 1, 300 / (interval or 0.02) do       -- at most 5 minutes
    if bench.finished() then break end
    if sample then
      local v = sample()
      samples = samples + 1
      if v and v > peak then peak = v end
    end
    sleep(interval or 0.02)
  end
  local r = bench.result()
  r.peak, r.samples = peak, samples
  return r
end

-- A connection held open for sampling the server while it may be full:
-- taken before the load, it never needs a free slot. count() is the number
-- of pgpool's backends (application_name "pgpool") other than itself;
-- query(sql, ...) runs any query on it.
-- Needs the pgpool module of the running Lua (LUA_CPATH).
function harness.monitor(conninfo)
  local pgpool = require("pgpool")
  local pool = pgpool.configure{ name = "harness-monitor", conninfo = conninfo, max = 1,
                                 log_level = "warn" }
  local conn = assert(pool:acquire())
  local COUNT = "select count(*) as n from pg_stat_activity"
    .. " where application_name = 'pgpool' and pid <> pg_backend_pid()"
  return {
    count = function()
      local res = assert(conn:query(COUNT))
      return res[1].n
    end,
    query = function(...) return conn:query(...) end,
    close = function()
      conn:release()
      pool:shutdown()
    end,
  }
end

-- Number of lines of the error log that contain `text` (plain).
function Server:count_in_log(text)
  local n = 0
  for line in self:error_log():gmatch("[^\n]+") do
    if line:find(text, 1, true) then n = n + 1 end
  end
  return n
end

return harness
