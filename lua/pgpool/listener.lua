-- pgpool.listener: LISTEN/NOTIFY on a connection of its own.
--
-- pool:listen(channel, ...) (or pgpool.listen for the default pool) takes
-- one connection of the pool for as long as the listener lives: it counts
-- against the pool's max and is never handed to anyone else. wait(timeout)
-- gives the next notification as channel, payload, pid. When the
-- connection is lost (a server restart, a terminated backend), wait takes
-- a new one, LISTENs again and says so once with nil, msg, "reconnected":
-- notifications sent while no connection listened were missed, and the
-- caller should re-read whatever state they announce.

local core = require("pgpool.core")
local discard_collected = core._facade.discard_collected

local listener = {}
listener.__index = listener

local format, type, ipairs, pcall = string.format, type, ipairs, pcall
local select, tostring, setmetatable, error = select, tostring, setmetatable, error

-- LISTEN on conn to every channel; true, or nil, msg, code, info.
local function listen_all(conn, channels)
  for _, channel in ipairs(channels) do
    local ok, msg, code, info = conn:exec("LISTEN " .. conn:escape_identifier(channel))
    if not ok then return nil, msg, code, info end
  end
  return true
end

-- Take a connection and LISTEN on it, within timeout seconds.
function listener:connect(timeout)
  local conn, msg, code, info = self.pool:acquire(timeout)
  if not conn then return nil, msg, code, info end
  -- collected without close, it is closed, not handed on still LISTENing
  discard_collected(conn)
  local ok
  ok, msg, code, info = listen_all(conn, self.channels)
  if not ok then
    conn:discard()
    return nil, msg, code, info
  end
  self.conn = conn
  return true
end

-- The next notification: channel, payload, pid; nil, "timeout", "timeout"
-- when none came within timeout seconds (0: only those already arrived;
-- math.huge: no limit); nil, msg, "reconnected" once after the connection
-- was replaced; nil, msg, code, info when no connection could be had.
function listener:wait(timeout)
  if type(timeout) ~= "number" or not (timeout >= 0) then
    error(format("bad argument #1 to 'listener:wait' (timeout must be a number >= 0, got %s)",
      tostring(timeout)), 2)
  end
  if self.closed then error("pgpool: listener closed", 2) end
  if not self.conn then
    local ok, msg, code, info = self:connect(timeout)
    if not ok then return nil, msg, code, info end
    return nil, "reconnected: notifications sent while no connection listened were missed",
      "reconnected"
  end
  local channel, payload, pid = self.conn:wait_notify(timeout)
  if channel then return channel, payload, pid end
  if payload == "timeout" then return nil, "timeout", "timeout" end
  -- the connection failed: the next wait takes a new one
  self.conn:discard()
  self.conn = nil
  local ok, msg, code, info = self:connect(timeout)
  if not ok then return nil, msg, code, info end
  return nil, "reconnected: notifications sent while no connection listened were missed",
    "reconnected"
end

-- Stop listening and give the connection back (UNLISTEN first, so the
-- next user of the connection hears nothing).
function listener:close()
  if self.closed then return true end
  self.closed = true
  local conn = self.conn
  self.conn = nil
  if conn then
    -- released only when UNLISTEN ran (exec returns nil, msg on failure)
    local ok, unlistened = pcall(conn.exec, conn, "UNLISTEN *")
    if ok and unlistened then conn:release() else conn:discard() end
  end
  return true
end

listener.__close = listener.close
listener.__gc = listener.close   -- Lua 5.2+; elsewhere the conn's own __gc

-- pool:listen(channel, ...): a listener on those channels, or nil, msg,
-- code, info when its connection could not be had. opts.timeout, when the
-- last argument is a table { timeout = t }, bounds the first connect.
return function(pool, ...)
  local channels, timeout = {}, nil
  for i = 1, select("#", ...) do
    local channel = select(i, ...)
    if type(channel) == "table" and i == select("#", ...) then
      timeout = channel.timeout
    elseif type(channel) ~= "string" or channel == "" or channel:find("\0", 1, true) then
      error(format("bad argument #%d to 'pool:listen' (channel must be a non-empty string)", i), 2)
    else
      channels[#channels + 1] = channel
    end
  end
  if #channels == 0 then error("bad argument #1 to 'pool:listen' (no channel)", 2) end
  local self = setmetatable({ pool = pool, channels = channels }, listener)
  local ok, msg, code, info = self:connect(timeout)
  if not ok then return nil, msg, code, info end
  return self
end
