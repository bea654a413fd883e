-- make test SANITIZE=1: busted runs with the ASan runtime preloaded
-- (LD_PRELOAD), since the module it loads is built with ASan. Its children
-- must not inherit that: psql and pg_ctl hang at exit under it, and nginx,
-- gcc or curl have no use for it. So run-specs.sh has busted call detach()
-- first thing, and only the Lua children that load the module get the
-- runtime back, through lua_command().
local sanitizer = {}

-- The preloaded runtime (PGPOOL_TEST_PRELOAD), or nil outside SANITIZE.
local function preload()
  local p = os.getenv('PGPOOL_TEST_PRELOAD')
  if p and p ~= '' then return p end
  return nil
end

-- Take LD_PRELOAD out of this process's environment: the children it starts
-- from now on run without the sanitizer runtime.
function sanitizer.detach()
  if not preload() then return end
  require('luv').os_unsetenv('LD_PRELOAD')
end

-- The shell words that run `interpreter` as a child that loads the module
-- of this run: under SANITIZE, with the runtime preloaded, and detached in
-- turn for the commands the child runs; else the interpreter alone.
function sanitizer.lua_command(interpreter)
  local p = preload()
  if not p then return interpreter end
  return ("env LD_PRELOAD='%s' %s -e \"require('spec.support.sanitizer').detach()\""):format(p, interpreter)
end

return sanitizer
