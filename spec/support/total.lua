-- Sum the "passed failed skipped" lines that spec/support/summary.lua appends
-- to $PGPOOL_SUMMARY_FILE (one line per busted run) and print one total line:
--
--   lua5.4 spec/support/total.lua FILE   ->   busted: N passed, M failed[, K skipped]
--
-- Exits 1 if anything failed, or if FILE is missing/empty or counts no
-- tests at all (no tests ran).

local path = arg[1] or os.getenv('PGPOOL_SUMMARY_FILE')
if not path or path == '' then
  io.stderr:write('usage: lua total.lua SUMMARY_FILE\n')
  os.exit(2)
end

local f = io.open(path, 'r')
if not f then
  io.stderr:write('total.lua: ' .. path .. ' missing: no tests ran\n')
  os.exit(1)
end

local passed, failed, skipped, runs = 0, 0, 0, 0
for line in f:lines() do
  local p, m, k = line:match('^%s*(%d+)%s+(%d+)%s+(%d+)%s*$')
  if p then
    passed, failed, skipped = passed + p, failed + m, skipped + k
    runs = runs + 1
  elseif line:match('%S') then
    io.stderr:write('total.lua: ignoring malformed line: ' .. line .. '\n')
  end
end
f:close()

if runs == 0 then
  io.stderr:write('total.lua: ' .. path .. ' is empty: no tests ran\n')
  os.exit(1)
end

local s = ('busted: %d passed, %d failed'):format(passed, failed)
if skipped > 0 then s = s .. (', %d skipped'):format(skipped) end
print(s)
if passed + failed + skipped == 0 then
  io.stderr:write('total.lua: no tests ran\n')
  os.exit(1)
end
os.exit(failed == 0 and 0 or 1)
