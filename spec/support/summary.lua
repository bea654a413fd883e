-- busted output handler for pgpool:  busted -o spec/support/summary.lua
--
-- Prints one character per test (. pass, F failure, E error, P pending),
-- then pending test names and full failure/error details, and finally exactly
-- one line:   busted: N passed, M failed[, K skipped]
-- (M counts failures and errors). If PGPOOL_SUMMARY_FILE is set, the line
-- "N M K" is appended to that file; spec/support/total.lua sums such files.
-- Works on Lua 5.4 and LuaJIT.

local pretty = require 'pl.pretty'

return function(options)
  local busted = require 'busted'
  local handler = require 'busted.outputHandlers.base'()

  -- Colour only on a terminal; busted ships lua-term.
  local ok, term = pcall(require, 'term')
  local colors
  if ok and io.type(io.stdout) == 'file' and term.isatty(io.stdout) then
    colors = require 'term.colors'
  else
    colors = setmetatable({}, { __index = function() return function(s) return s end end })
  end

  local marks = {
    success = colors.green('.'),
    failure = colors.red('F'),
    error = colors.magenta('E'),
    pending = colors.yellow('P'),
  }

  local function out(s)
    io.write(s)
    io.flush()
  end

  local function message_text(m)
    if type(m) == 'string' then return m end
    if m == nil then return 'Nil error' end
    return pretty.write(m)
  end

  -- "file:line" of a failure/pending entry, if busted recorded one.
  local function where(entry)
    local t = entry.element and entry.element.trace or entry.trace
    if t and t.short_src then
      return t.short_src .. ':' .. tostring(t.currentline)
    end
    return nil
  end

  local function describe_failure(f, label)
    local lines = {}
    local loc = where(f)
    if loc then
      lines[#lines + 1] = label .. ' ' .. colors.cyan(loc) .. ': ' .. colors.bright(f.name)
      lines[#lines + 1] = message_text(f.message)
    else
      -- e.g. a spec file that failed to load: the message carries the location.
      lines[#lines + 1] = label .. ' ' .. colors.bright(f.name) .. ': ' .. message_text(f.message)
    end
    if f.randomseed then lines[#lines + 1] = 'Random seed: ' .. f.randomseed end
    if options.verbose and f.trace and f.trace.traceback then
      lines[#lines + 1] = f.trace.traceback
    end
    return table.concat(lines, '\n')
  end

  local function summary_line(passed, failed, skipped)
    local s = ('busted: %d passed, %d failed'):format(passed, failed)
    if skipped > 0 then s = s .. (', %d skipped'):format(skipped) end
    return s
  end

  local function record(passed, failed, skipped)
    local path = os.getenv('PGPOOL_SUMMARY_FILE')
    if not path or path == '' then return end
    local f, err = io.open(path, 'a')
    if not f then
      io.stderr:write('summary.lua: cannot append to ' .. path .. ': ' .. tostring(err) .. '\n')
      return
    end
    f:write(('%d %d %d\n'):format(passed, failed, skipped))
    f:close()
  end

  handler.testEnd = function(element, parent, status)
    if not options.deferPrint then out(marks[status] or '?') end
    return nil, true
  end

  -- Errors outside an `it` (file load, before_each in describe, ...).
  handler.error = function()
    out(marks.error)
    return nil, true
  end

  handler.suiteStart = function(suite, count, total)
    if total > 1 then out(('\nRun %d of %d\n'):format(count, total)) end
    return nil, true
  end

  handler.suiteEnd = function()
    local passed = handler.successesCount
    local failed = handler.failuresCount + handler.errorsCount
    local skipped = handler.pendingsCount

    out(('\n%.3f s\n'):format(handler.getDuration()))

    for _, p in ipairs(handler.pendings) do
      local loc = where(p)
      out('\n' .. colors.yellow('PENDING') .. ' ' .. (loc and colors.cyan(loc) .. ': ' or '') ..
          colors.bright(p.name) .. '\n')
      if p.message ~= nil then out(message_text(p.message) .. '\n') end
    end
    for _, f in ipairs(handler.failures) do
      out('\n' .. describe_failure(f, colors.red('FAILURE')) .. '\n')
    end
    for _, e in ipairs(handler.errors) do
      out('\n' .. describe_failure(e, colors.magenta('ERROR')) .. '\n')
    end

    out('\n' .. summary_line(passed, failed, skipped) .. '\n')
    record(passed, failed, skipped)
    return nil, true
  end

  busted.subscribe({ 'test', 'end' }, handler.testEnd, { predicate = handler.cancelOnPending })
  busted.subscribe({ 'suite', 'start' }, handler.suiteStart)
  busted.subscribe({ 'suite', 'end' }, handler.suiteEnd)
  busted.subscribe({ 'error', 'file' }, handler.error)
  busted.subscribe({ 'failure', 'file' }, handler.error)
  busted.subscribe({ 'error', 'describe' }, handler.error)
  busted.subscribe({ 'failure', 'describe' }, handler.error)

  return handler
end
