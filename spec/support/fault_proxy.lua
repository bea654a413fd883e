-- The specs' fault proxy: a TCP proxy on 127.0.0.1 in front of a server
-- (the test PostgreSQL), whose behaviour a spec switches while it runs.
-- Started and driven by helpers.fault_proxy (spec/support/helpers.lua):
--
--   lua5.4 spec/support/fault_proxy.lua DIR HOST PORT PARENT_PID LIFETIME
--
-- Modes (DIR/control holds "SEQ MODE [ARG]"; the proxy polls it every 10 ms
-- and writes SEQ back into DIR/state once the mode is in force, or SEQ and
-- error=WHY when it refuses it):
--   pass           forward both ways
--   delay MS       forward both ways, each chunk held MS ms (in order)
--   stall          forward nothing, open connections and new ones alike (a
--                  frozen network); the next forwarding mode delivers what
--                  was held
--   drop           close both sides of every connection, open or new (FIN)
--   reset          the same with RST (SO_LINGER 0)
--   accept_close   accept new connections and close them at once, before
--                  they reach the server; open connections carry on
--   ignore_cancel  forward, except a cancel request (a new connection whose
--                  first packet is 16 bytes: length 16, code 80877102): it is
--                  accepted, never forwarded, never answered
--
-- DIR/state (rewritten on every change, "name=value" lines): port, pid, seq,
-- accepted, open, upstream (connections made to the server), cancels
-- (cancel requests held), to_server and to_client (bytes forwarded).
--
-- It exits, removing DIR, on "stop", on SIGTERM, SIGINT or SIGHUP, when
-- PARENT_PID is gone, or after LIFETIME seconds, whichever comes first: no
-- proxy outlives a run.
local uv = require 'luv'
local listen = require 'spec.support.listen'

local dir, host, target_port = arg[1], arg[2], tonumber(arg[3])
local parent, lifetime = tonumber(arg[4]), tonumber(arg[5])
assert(dir and host and target_port and parent and lifetime,
  'usage: fault_proxy.lua DIR HOST PORT PARENT_PID LIFETIME')

local CANCEL_CODE = 80877102
local MODES = { pass = true, delay = true, stall = true, drop = true, reset = true,
                accept_close = true, ignore_cancel = true }

local mode, delay_ms, seq = 'pass', 0, 0
local refused                    -- why the last control line was refused, or nil
local counts = { accepted = 0, open = 0, upstream = 0, cancels = 0, to_server = 0, to_client = 0 }
local pairs_open = {}            -- every open client/server pair, as a set
local listener, listen_port
local stopping = false           -- set on the way out: DIR is going away

-- State file --------------------------------------------------------------------

local function write_file(path, text)
  local tmp = path .. '.tmp'
  local fd = assert(uv.fs_open(tmp, 'w', tonumber('644', 8)))
  uv.fs_write(fd, text)
  uv.fs_close(fd)
  assert(uv.fs_rename(tmp, path))
end

local function read_file(path)
  local fd = uv.fs_open(path, 'r', 0)
  if not fd then return nil end
  local text = uv.fs_read(fd, 4096, 0)
  uv.fs_close(fd)
  return text
end

local function publish()
  if stopping then return end
  local lines = { ('port=%d'):format(listen_port), ('pid=%d'):format(uv.os_getpid()),
                  ('seq=%d'):format(seq), ('mode=%s'):format(mode) }
  for _, name in ipairs{ 'accepted', 'open', 'upstream', 'cancels', 'to_server', 'to_client' } do
    lines[#lines + 1] = ('%s=%d'):format(name, counts[name])
  end
  if refused then lines[#lines + 1] = 'error=' .. refused end
  write_file(dir .. '/state', table.concat(lines, '\n') .. '\n')
end

-- One client and its server connection ----------------------------------------------

local function close(handle, rst)
  if not handle or handle:is_closing() then return end
  if rst then handle:close_reset() else handle:close() end
end

local Pair = {}
Pair.__index = Pair

-- End both sides: FIN, or RST when rst is true.
function Pair:finish(rst)
  if self.done then return end
  self.done = true
  close(self.client, rst)
  close(self.server, rst)
  pairs_open[self] = nil
  counts.open = counts.open - 1
  publish()
end

-- Write what is due in one direction's queue, in order, once `to` is
-- connected; an EOF marker ends the pair. Nothing moves during a stall. The
-- counts are published before the bytes leave, so that a client that got
-- them reads counts that include them.
function Pair:flush(queue, to, counter)
  if not to then return end
  local due, ends = {}, false
  while queue[1] and mode ~= 'stall' and queue[1].due <= uv.now() do
    local item = table.remove(queue, 1)
    if item.eof then ends = true break end
    due[#due + 1] = item.data
    counts[counter] = counts[counter] + #item.data
  end
  if #due > 0 then
    publish()
    for _, data in ipairs(due) do to:write(data) end
  end
  if ends then          -- FIN once the writes before it are out, then close
    return to:shutdown(function() self:finish(false) end)
  end
  if queue[1] and mode ~= 'stall' then
    local timer = uv.new_timer()
    timer:start(math.max(0, queue[1].due - uv.now()), 0, function()
      timer:close()
      if not self.done then self:flush(queue, to, counter) end
    end)
  end
end

function Pair:flush_both()
  self:flush(self.up, self.server_ready and self.server or nil, 'to_server')
  self:flush(self.down, self.client, 'to_client')
end

-- Queue a chunk (data nil: the end of the stream) for the other side.
local function push(queue, data)
  queue[#queue + 1] = { data = data, eof = data == nil,
                        due = uv.now() + (mode == 'delay' and delay_ms or 0) }
end

local function is_cancel_request(data)
  if #data ~= 16 then return false end
  local len, code = string.unpack('>i4>i4', data)
  return len == 16 and code == CANCEL_CODE
end

function Pair:from_client(err, data)
  if self.done then return end
  if self.held then                    -- a held cancel request ends with its client
    if not data then self:finish(err ~= nil) end
    return
  end
  if err then return self:finish(true) end
  if self.first and data and mode == 'ignore_cancel' and is_cancel_request(data) then
    self.held = true                   -- accepted, never forwarded, never answered
    counts.cancels = counts.cancels + 1
    close(self.server, false)
    return publish()
  end
  self.first = false
  push(self.up, data)
  self:flush_both()
end

function Pair:from_server(err, data)
  if self.done then return end
  if err then return self:finish(true) end
  push(self.down, data)
  self:flush_both()
end

-- Read both sides (the server once connected); stop reading during a stall.
function Pair:read(on)
  if on == self.reading then return end
  self.reading = on
  if on then
    self.client:read_start(function(err, data) self:from_client(err, data) end)
    if self.server_ready then
      self.server:read_start(function(err, data) self:from_server(err, data) end)
    end
  else
    self.client:read_stop()
    if self.server_ready then self.server:read_stop() end
  end
end

-- Connect to the server and start reading: at accept in the forwarding
-- modes, or when the stall that held a new pair ends.
function Pair:start()
  self.started = true
  self.server = uv.new_tcp()
  self.server:connect(host, target_port, function(err)
    if self.done or self.held then return end
    if err then return self:finish(true) end
    counts.upstream = counts.upstream + 1
    publish()
    self.server_ready = true
    if self.reading then
      self.server:read_start(function(rerr, data) self:from_server(rerr, data) end)
    end
    self:flush_both()
  end)
  self:read(true)
end

-- Put the pair under the current mode.
function Pair:apply()
  if mode == 'drop' or mode == 'reset' then return self:finish(mode == 'reset') end
  if mode == 'stall' then
    if self.started then self:read(false) end
    return
  end
  if not self.started then return self:start() end
  self:read(true)
  self:flush_both()
end

local function on_accept(err)
  if err then return end
  local client = uv.new_tcp()
  if not listener:accept(client) then return close(client) end
  counts.accepted = counts.accepted + 1
  if mode == 'accept_close' or mode == 'drop' or mode == 'reset' then
    close(client, mode == 'reset')
    return publish()
  end
  local pair = setmetatable({ client = client, up = {}, down = {}, first = true }, Pair)
  pairs_open[pair] = true
  counts.open = counts.open + 1
  publish()
  if mode ~= 'stall' then pair:start() end
end

-- Control, lifetime, exit ---------------------------------------------------------

local function stop()
  if stopping then return end
  stopping = true
  if listener then close(listener) end
  for pair in pairs(pairs_open) do pair:finish(false) end
  for _, name in ipairs{ 'control', 'state', 'log' } do uv.fs_unlink(dir .. '/' .. name) end
  uv.fs_rmdir(dir)
  uv.stop()
end

local function poll_control()
  local text = read_file(dir .. '/control')
  if not text then return end
  local n, new_mode, value = text:match('^(%d+) (%S+) ?(%S*)')
  n = tonumber(n)
  if not n or n <= seq then return end
  if new_mode == 'stop' then return stop() end
  seq = n
  if not MODES[new_mode] then
    refused = 'unknown mode ' .. new_mode
  elseif new_mode == 'delay' and not tonumber(value) then
    refused = 'delay needs a number of ms'
  else
    refused = nil
  end
  if refused then return publish() end
  mode, delay_ms = new_mode, tonumber(value) or 0
  local all = {}
  for pair in pairs(pairs_open) do all[#all + 1] = pair end
  for _, pair in ipairs(all) do pair:apply() end
  publish()
end

listener, listen_port = listen(on_accept)
publish()

local control_timer = uv.new_timer()
control_timer:start(10, 10, poll_control)

local parent_timer = uv.new_timer()
parent_timer:start(200, 200, function()
  if not uv.kill(parent, 0) then stop() end
end)

for _, name in ipairs{ 'sigterm', 'sigint', 'sighup' } do
  local signal = uv.new_signal()
  signal:start(name, stop)
  signal:unref()
end

local lifetime_timer = uv.new_timer()
lifetime_timer:start(math.floor(lifetime * 1000), 0, stop)

uv.run()
-- the loop ended by stop(): close what is left and leave
uv.walk(function(handle) if not handle:is_closing() then handle:close() end end)
uv.run()
os.exit(0)
