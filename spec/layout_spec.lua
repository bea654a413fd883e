-- The house layout (README "Architecture"): every src/ file opens with what
-- it owns, no .c file is above ~1,000 lines (pq.c, the one libpq path,
-- aside), and no two files depend on each other, directly or in a circle.
-- A file depends on another when it includes that file's header or calls
-- a function the other defines.

local function read(path)
  local f = assert(io.open(path, 'r'))
  local s = f:read('*a')
  f:close()
  return s
end

local function c_files()
  local p = assert(io.popen('ls src/*.c'))
  local list = {}
  for line in p:lines() do list[#list + 1] = line:match('src/(.-)%.c$') end
  p:close()
  return list
end

-- The functions a file defines for others: non-static definitions.
local function exported(text)
  local names = {}
  for line in text:gmatch('[^\n]+') do
    if not line:match('^static') and not line:match('^%s') and not line:match('^#')
      and not line:match('^/%*') and not line:match(';%s*$') then
      local name = line:match('([%a_][%w_]*)%(')
      if name and not line:match('^typedef') then names[#names + 1] = name end
    end
  end
  return names
end

-- Strip comments and string literals, so that prose naming a function is
-- not taken for a call.
local function code_only(text)
  return (text:gsub('/%*.-%*/', ''):gsub('"[^"\n]*"', '""'))
end

local function dependency_graph()
  local files, texts, owner = c_files(), {}, {}
  for _, f in ipairs(files) do
    texts[f] = read('src/' .. f .. '.c')
    for _, name in ipairs(exported(texts[f])) do owner[name] = f end
  end
  local edges = {}
  for _, f in ipairs(files) do
    edges[f] = {}
    local code = code_only(texts[f])
    -- X.h belongs to X.c; a private header shared by several files
    -- (pool_internal.h) counts through the calls alone.
    for header in texts[f]:gmatch('#include "([%w_]+)%.h"') do
      if header ~= f and texts[header] then edges[f][header] = 'includes ' .. header .. '.h' end
    end
    for name, target in pairs(owner) do
      if target ~= f and not edges[f][target] and code:find('[^%w_]' .. name .. '%(') then
        edges[f][target] = 'calls ' .. name
      end
    end
  end
  return files, edges
end

-- A circle as "a -> b -> a", or nil.
local function find_circle(files, edges)
  local state, stack = {}, {}
  local function visit(f)
    state[f] = 'open'
    stack[#stack + 1] = f
    for g in pairs(edges[f]) do
      if state[g] == 'open' then
        local from
        for i, h in ipairs(stack) do if h == g then from = i end end
        local path = {}
        for i = from, #stack do path[#path + 1] = stack[i] .. ' (' .. edges[stack[i]][stack[i + 1] or g] .. ')' end
        return table.concat(path, ' -> ') .. ' -> ' .. g
      elseif not state[g] then
        local found = visit(g)
        if found then return found end
      end
    end
    stack[#stack] = nil
    state[f] = 'done'
  end
  for _, f in ipairs(files) do
    if not state[f] then
      local found = visit(f)
      if found then return found end
    end
  end
end

describe('the source layout', function()
  it('has no dependency circle among src/ files', function()
    local files, edges = dependency_graph()
    assert.is_true(#files >= 10)
    assert.is_nil(find_circle(files, edges))
  end)

  it('finds a circle when there is one (the check can fail)', function()
    local edges = { a = { b = 'calls b_f' }, b = { c = 'calls c_f' }, c = { a = 'includes a.h' } }
    assert.truthy(find_circle({ 'a', 'b', 'c' }, edges))
    edges.c = {}
    assert.is_nil(find_circle({ 'a', 'b', 'c' }, edges))
  end)

  it('keeps every .c file under ~1,000 lines, pq.c (the one libpq path) aside', function()
    for _, f in ipairs(c_files()) do
      local _, lines = read('src/' .. f .. '.c'):gsub('\n', '')
      if f ~= 'pq' then assert.is_true(lines <= 1000, f .. '.c has ' .. lines .. ' lines') end
    end
  end)

  it('opens every src/ file with a comment saying what it owns', function()
    local p = assert(io.popen('ls src/*.c src/*.h'))
    for path in p:lines() do
      assert.truthy(read(path):match('^/%*\n %* ' .. path:match('src/(.*)$') .. ' %- '),
        path .. ' does not open with "/*\\n * <name> - <what it owns>"')
    end
    p:close()
  end)
end)
