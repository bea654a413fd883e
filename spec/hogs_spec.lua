-- Connection hogs (track_hogs): every checkout is counted at the user's
-- line that made it, with its hold time, in a bounded process-wide table
-- per pool; pool:hogs(n) gives the sites that held connections longest.
-- Timing bounds are generous: a loaded machine only makes holds longer.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

local start_spec, finish_spec = helpers.spec_isolation(pgpool, function() end)
before_each(start_spec)
after_each(finish_spec)

-- "file:line" of the caller's line, as the hogs table names it.
local function where()
  local info = debug.getinfo(2, 'Sl')
  return info.short_src .. ':' .. info.currentline
end

-- The entry of pool:hogs() for site, or nil.
local function site_of(list, site)
  for _, h in ipairs(list) do
    if h.site == site then return h end
  end
end

local function tracked(name, extra)
  extra = extra or {}
  extra.track_hogs = true
  return pgpool.configure(opts(name, extra))
end

describe('pool:hogs', function()
  it('names each checkout site by the file and line of the acquire, with count, total, max and held', function()
    local pool = tracked('hogs-two', { max = 2 })
    local long_site, short_site
    do
      long_site = where() local conn = assert(pool:acquire())
      helpers.sleep(0.2)
      conn:release()
    end
    for _ = 1, 3 do
      short_site = where() local conn = assert(pool:acquire())
      helpers.sleep(0.005)
      conn:release()
    end
    assert.truthy(long_site:find('hogs_spec.lua:', 1, true))

    local hogs = assert(pool:hogs())
    assert.are.equal(2, #hogs)
    local long, short = site_of(hogs, long_site), site_of(hogs, short_site)
    assert.truthy(long, long_site)
    assert.truthy(short, short_site)
    assert.are.equal(1, long.count)
    assert.are.equal(3, short.count)
    assert.are.equal(0, long.held)
    assert.are.equal(0, short.held)
    assert.is_true(long.total >= 0.2 and long.total < 10, tostring(long.total))
    assert.is_true(long.max >= 0.2 and long.max <= long.total, tostring(long.max))
    assert.is_true(short.total >= 0.015 and short.total < 10, tostring(short.total))
    assert.is_true(short.max >= 0.005 and short.max <= short.total, tostring(short.max))
    -- longest total first
    assert.is_true(hogs[1].total >= hogs[2].total)
  end)

  it('counts a connection held now in held, and its hold once it ends', function()
    local pool = tracked('hogs-held')
    local site = where() local conn = assert(pool:acquire())
    local now = site_of(assert(pool:hogs()), site)
    assert.are.same({ site = site, count = 1, held = 1, total = 0, max = 0 }, now)
    conn:release()
    conn:release()            -- idempotent: counted once
    local after = site_of(assert(pool:hogs()), site)
    assert.are.equal(0, after.held)
    assert.are.equal(1, after.count)
    assert.is_true(after.total > 0)
  end)

  it('ends the hold of a discarded connection and of one collected by __gc', function()
    local pool = tracked('hogs-gc')
    local discard_site, gc_site
    do
      discard_site = where() local conn = assert(pool:acquire())
      conn:discard()
    end
    local function leak()
      gc_site = where() local conn = assert(pool:acquire())
      assert.truthy(conn:query('select 1'))
    end
    -- the collector may not finalise the leaked handle before it is looked at
    collectgarbage('stop')
    leak()
    local held = site_of(pool:hogs(), gc_site).held
    collectgarbage('restart')
    assert.are.equal(1, held)
    collectgarbage()
    collectgarbage()
    assert.are.equal(1, pool:stats().leaked)
    local hogs = pool:hogs()
    for _, site in ipairs{ discard_site, gc_site } do
      local h = site_of(hogs, site)
      assert.truthy(h, site)
      assert.are.equal(1, h.count)
      assert.are.equal(0, h.held)
      assert.is_true(h.total > 0)
    end
  end)

  it('ends the hold of a <close> variable at the end of its block (Lua 5.4)', function()
    if _VERSION ~= 'Lua 5.4' then
      pending('<close> is Lua 5.4 syntax')
      return
    end
    local pool = tracked('hogs-close')
    local block = assert(load([[
      local pool, sleep = ...
      do
        local conn <close> = assert(pool:acquire())
        sleep(0.02)
      end
    ]], '=closing'))
    block(pool, helpers.sleep)
    local h = site_of(pool:hogs(), 'closing:3')
    assert.truthy(h)
    assert.are.equal(0, h.held)
    assert.is_true(h.total >= 0.02 and h.total < 10, tostring(h.total))
    assert.are.equal(0, pool:stats().leaked)
  end)

  it('counts pool:query and pool:exec at their caller\'s line', function()
    local pool = tracked('hogs-query')
    local q_site = where() assert(pool:query('select pg_sleep(0.05)'))
    local e_site = where() assert(pool:exec('select 1; select 2'))
    local q, e = site_of(pool:hogs(), q_site), site_of(pool:hogs(), e_site)
    assert.truthy(q, q_site)
    assert.truthy(e, e_site)
    assert.are.equal(1, q.count)
    assert.are.equal(0, q.held)
    assert.is_true(q.total >= 0.05 and q.total < 10, tostring(q.total))
    assert.are.equal(1, e.count)
  end)

  it('names the user\'s line, not the facade\'s, for with, transaction and the module-level shortcuts', function()
    local pool = tracked('default')     -- pgpool.* act on "default"
    local function noop() return true end
    local sites = {}
    sites[#sites + 1] = where() assert(pool:with(noop))
    sites[#sites + 1] = where() assert(pool:transaction(noop))
    sites[#sites + 1] = where() assert(pgpool.with(noop))
    sites[#sites + 1] = where() assert(pgpool.transaction(noop))
    sites[#sites + 1] = where() assert(pgpool.query('select 1'))
    sites[#sites + 1] = where() assert(pgpool.exec('select 1'))
    sites[#sites + 1] = where() assert(pgpool.acquire()):release()
    sites[#sites + 1] = where() assert(pcall(pool.acquire, pool))
    collectgarbage()   -- the last one's handle
    collectgarbage()
    local hogs = assert(pgpool.hogs(100))
    assert.are.equal(#sites, #hogs)
    for _, site in ipairs(sites) do
      local h = site_of(hogs, site)
      assert.truthy(h, site .. ' not among the sites')
      assert.are.equal(1, h.count)
      assert.are.equal(0, h.held)
    end
    for _, h in ipairs(hogs) do
      assert.is_nil(h.site:find('pgpool.lua', 1, true), h.site)
    end
  end)

  it('counts a checkout of a replica in the replica\'s table', function()
    local pool = tracked('hogs-rw', { replicas = { helpers.dsn() .. ' application_name=hogs_replica' } })
    local site = where() local conn = assert(pool:acquire{ read_only = true })
    conn:release()
    local replica = assert(pgpool.pool('hogs-rw/replica-1'))
    assert.are.equal(1, site_of(assert(replica:hogs()), site).count)
    assert.is_nil(site_of(assert(pool:hogs()), site))
  end)

  it('returns the top n by total hold time (default 10), as plain data', function()
    local pool = tracked('hogs-top')
    for i = 1, 12 do
      local fn = assert(load('local pool = ... local c = assert(pool:acquire()) c:release()', '=site' .. i))
      for _ = 1, i do fn(pool) end
    end
    assert.are.equal(10, #pool:hogs())
    assert.are.equal(12, #pool:hogs(100))
    assert.are.equal(3, #pool:hogs(3))
    assert.are.same({}, pool:hogs(0))
    assert.are.equal(12, #pool:hogs(math.huge))
    local all = pool:hogs(100)
    for i = 2, #all do assert.is_true(all[i - 1].total >= all[i].total) end
    for _, h in ipairs(all) do
      local n = tonumber(h.site:match('^site(%d+):1$'))
      assert.truthy(n, h.site)
      assert.are.equal(n, h.count)
      for key, value in pairs(h) do
        assert.truthy(({ string = true, number = true })[type(value)], key)
      end
    end
    local ok, cjson = pcall(require, 'cjson')
    if ok then assert.truthy(cjson.encode(all):find('"site":"site12:1"', 1, true)) end
  end)

  it('keeps at most 1024 sites and counts the rest into "(other)"', function()
    local pool = tracked('hogs-bound')
    for i = 1, 1100 do
      local fn = assert(load('local pool = ... pool:acquire():release()', '=bound' .. i))
      fn(pool)
    end
    local all = pool:hogs(5000)
    assert.are.equal(1025, #all)
    local other = site_of(all, '(other)')
    assert.truthy(other)
    assert.are.equal(1100 - 1024, other.count)
    assert.are.equal(0, other.held)
  end)

  it('counts the checkouts of 4 Lua states on 4 threads from one line into one site', function()
    if helpers.runtime() ~= 'lua5.4' then
      pending('lthreads embeds Lua 5.4; runs under lua5.4')
      return
    end
    local builds = { os.getenv('PGPOOL_TEST_BUILD') or 'build/lua5.4' }
    local f = io.open('build/tsan/lthreads')
    if f then
      f:close()
      builds[#builds + 1] = 'build/tsan'
    end
    local script = 'spec/support/hogs_threads.lua'
    local line
    local n = 0
    for text in io.lines(script) do
      n = n + 1
      if text:find('THE SITE', 1, true) then line = n end
    end
    for _, build in ipairs(builds) do
      local rc, out = helpers.run(string.format(
        "TSAN_OPTIONS='halt_on_error=1 exitcode=66' LUA_PATH='lua/?.lua;;' LUA_CPATH='%s/?.so;;' "
          .. "%s/lthreads 4 %s 200 %s", build, build, script, helpers.shquote(helpers.dsn())))
      assert.are.equal(0, rc, out)
      assert.is_nil(out:find('ThreadSanitizer', 1, true), out)
      local report = out:match('\n?0: ([^\n]*)')
      assert.are.equal(string.format('%s:%d|800|0|', script, line), report:match('^[^|]+|%d+|%d+|'), out)
    end
  end)

  it('starts empty in a forked child, where inherited checkouts end without counting', function()
    local lfork = require('lfork')
    local pool = tracked('hogs-fork', { max = 2 })
    local held = assert(pool:acquire())
    io.stdout:flush()
    io.stderr:flush()
    local child = lfork.fork()
    if child == 0 then
      local code = 0
      local ok = pcall(function()
        if #pool:hogs() ~= 0 then code = 10 return end
        held:release()
        if #pool:hogs() ~= 0 then code = 11 return end
        local site = where() local conn = pool:acquire()
        if not conn then code = 12 return end
        conn:release()
        local hogs = pool:hogs()
        if #hogs ~= 1 or hogs[1].site ~= site or hogs[1].held ~= 0 then code = 13 return end
      end)
      os.exit(ok and code or 20, true)
    end
    assert.are.equal(0, lfork.wait(child))
    assert.are.equal(1, pool:hogs()[1].held)   -- the parent's is still held
    held:release()
    assert.are.equal(0, pool:hogs()[1].held)
  end)
end)

describe('track_hogs', function()
  it('is off by default: pool:hogs() returns nil and a message, and snapshot() has no hogs', function()
    local pool = pgpool.configure(opts('hogs-off'))
    pool:acquire():release()
    local hogs, msg = pool:hogs()
    assert.is_nil(hogs)
    assert.truthy(msg:find('track_hogs', 1, true), msg)
    local on = tracked('hogs-on')
    on:acquire():release()
    local seen = {}
    for _, st in ipairs(pgpool.snapshot().pools) do seen[st.name] = st end
    assert.is_nil(seen['hogs-off'].hogs)
    assert.are.equal(1, #seen['hogs-on'].hogs)
  end)

  it('must be a boolean', function()
    for _, bad in ipairs{ 1, 'yes', {} } do
      local ok, err = pcall(pgpool.configure, opts('hogs-bad', { track_hogs = bad }))
      assert.is_false(ok)
      assert.truthy(err:find("option 'track_hogs' must be a boolean", 1, true), err)
    end
    -- the C side checks too
    local core = require('pgpool.core')
    local cfg = opts('hogs-bad', { max = 1, min = 0, idle_timeout = 1, acquire_timeout = 1,
      connect_timeout = 1, query_timeout = 0, max_lifetime = 0, max_waiting = 0, statement_cache = 0,
      max_shared = 0, slow_query = 0, leak_timeout = 0, track_hogs = 'yes' })
    local ok, err = pcall(core.configure, cfg)
    assert.is_false(ok)
    assert.truthy(err:find("option 'track_hogs' must be a boolean", 1, true), err)
  end)

  it('is part of a pool\'s options: the same name with another track_hogs raises', function()
    tracked('hogs-same')
    assert.truthy(pgpool.configure(opts('hogs-same', { track_hogs = true })))
    local ok, err = pcall(pgpool.configure, opts('hogs-same'))
    assert.is_false(ok)
    assert.truthy(err:find('different options', 1, true), err)
  end)

  it('checks n', function()
    local pool = tracked('hogs-n')
    local ok, err = pcall(pool.hogs, pool, 'x')
    assert.is_false(ok)
    assert.truthy(err:find("bad argument #1 to 'pool:hogs'", 1, true), err)
    ok, err = pcall(pool.hogs, pool, -1)
    assert.is_false(ok)
    assert.truthy(err:find('n must be >= 0', 1, true), err)
  end)
end)
