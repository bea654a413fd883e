-- Process-wide, provably: several Lua states on several OS threads of one
-- process share one pool and its hard cap (spec/support/lthreads.c runs
-- spec/support/hammer.lua in 8 states at once), also under ThreadSanitizer.
local helpers = require("spec.support.helpers")

local function run_hammer(build, seconds, extra_env)
  local cmd = string.format(
    "%s LUA_PATH='lua/?.lua;;' LUA_CPATH='%s/?.so;;' %s/lthreads 8 spec/support/hammer.lua %d '%s' 2>%s",
    extra_env or "", build, build, seconds, helpers.dsn(), os.tmpname())
  local stderr_file = cmd:match("2>(%S+)$")
  local out = assert(io.popen(cmd)):read("*a")
  local f = io.open(stderr_file)
  local err = f and f:read("*a") or ""
  if f then f:close() end
  os.remove(stderr_file)
  local lines = {}
  for index, text in out:gmatch("(%d+): ([^\n]*)") do lines[tonumber(index)] = text end
  return lines, err, out
end

local function fields(text)
  local t = {}
  for k, v in (text or ""):gmatch("([%w_]+)=(%d+)") do t[k] = tonumber(v) end
  return t
end

local function check_run(lines, out)
  -- every worker finished: each operation succeeded or timed out cleanly
  for i = 2, 8 do
    local w = fields(lines[i])
    assert(w.ok, "worker " .. i .. " did not report: " .. out)
    assert.are.equal(0, w.errors)
    assert.is_true(w.ok > 0)
  end
  local sampler, final = fields(lines[1]), fields(lines[0])
  assert.is_true(sampler.samples > 10, out)
  assert.is_true(sampler.peak >= 1 and sampler.peak <= 4, "peak backends " .. tostring(sampler.peak))
  -- the counters add up
  assert.are.equal(final.acquired, final.released)
  assert.are.equal(0, final.in_use)
  assert.are.equal(0, final.waiting)
  assert.is_true(final.total <= 4)
  assert.are.equal(final.total, final.idle + final.in_use + final.connecting)
  assert.are.equal(final.created - final.closed, final.total)
  assert.are.equal(0, final.leaked)
  local ops = 0
  for i = 2, 8 do ops = ops + fields(lines[i]).ok + fields(lines[i]).timeouts end
  assert.are.equal(ops, final.acquired + final.timeouts)
end

describe("one pool shared by 8 Lua states on 8 threads", function()
  if os.getenv("PGPOOL_TEST_RUNTIME") ~= "lua5.4" then
    pending("lthreads embeds Lua 5.4; runs once, under lua5.4")
    return
  end

  it("never lets the server see more than max = 4 backends, and the counters add up", function()
    -- build/asan/lua5.4 under make test SANITIZE=1
    local lines, err, out = run_hammer(os.getenv("PGPOOL_TEST_BUILD") or "build/lua5.4", 3)
    assert.are.equal("", err)
    check_run(lines, out)
    assert.is_true(helpers.wait_until(function() return helpers.count_backends("pgpool") == 0 end, 5))
  end)

  it("is free of data races under ThreadSanitizer", function()
    local f = io.open("build/tsan/lthreads")
    if not f then
      pending("build/tsan not built (make tsan)")
      return
    end
    f:close()
    local lines, err, out = run_hammer("build/tsan", 2, "TSAN_OPTIONS='halt_on_error=1 exitcode=66'")
    assert.is_nil(err:find("ThreadSanitizer", 1, true), err)
    check_run(lines, out)
  end)
end)
