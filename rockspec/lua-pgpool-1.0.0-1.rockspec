-- pgpool from a checkout, built and installed by LuaRocks. From the top of
-- the repository:
--
--   luarocks --lua-version 5.4 make rockspec/lua-pgpool-scm-1.rockspec
--   luarocks --lua-version 5.1 make rockspec/lua-pgpool-scm-1.rockspec LUA_INCDIR="$(pkg-config --variable=includedir luajit)"
--
-- The rock is lua-pgpool, the module it installs `pgpool`: "pgpool" alone is
-- the name people know for Pgpool-II, PostgreSQL's middleware server, and a
-- rock of that name reads as a client for it. lua-pgpool follows the
-- lua-<name> convention of Debian and LuaRocks for Lua libraries.
-- rockspec/lua-pgpool-<version>-1.rockspec is the same for a tagged release
-- (spec/luarocks_spec.lua checks that the two differ only in version and
-- source).
--
-- The C core is compiled by the project's Makefile (`make rock`), so a rock
-- gets the same flags as `make` (-std=c99, -fvisibility=hidden: only
-- luaopen_pgpool_core is exported), and libpq is found the PostgreSQL way,
-- through pg_config (or PG_INCDIR / PG_LIBDIR in the environment).
-- LuaRocks 3.8 only looks for headers in <prefix>/include, which misses
-- Debian's /usr/include/postgresql/libpq-fe.h, so there is no
-- external_dependencies entry for it.

rockspec_format = "3.0"
package = "lua-pgpool"
version = "1.0.0-1"

source = {
   -- The release's tag; `luarocks make` from a checkout fetches nothing.
   url = "git+https://github.com/pgpool-lua/lua-pgpool.git",
   tag = "v1.0.0",
}

description = {
   summary = "A process-wide PostgreSQL connection pool for Lua, in C over libpq",
   detailed = [[
One pool per OS process behind a mutex: every Lua state in the process (the
main script, luv threads, OpenResty worker-thread VMs) shares the same pool
and the same hard cap on connections. Lua 5.1 to 5.4 and LuaJIT.
]],
   homepage = "https://github.com/pgpool-lua/lua-pgpool",
   license = "MIT",
   labels = { "database", "postgresql", "pool" },
}

dependencies = {
   "lua >= 5.1",
}

build = {
   type = "make",
   build_target = "rock",
   build_variables = {
      CC = "$(CC)",
      CFLAGS = "$(CFLAGS)",
      LIBFLAG = "$(LIBFLAG)",
      LUA_INCDIR = "$(LUA_INCDIR)",
   },
   install_pass = false,
   -- Every module under lua/ is listed here (spec/luarocks_spec.lua checks).
   install = {
      lua = {
         ["pgpool"] = "lua/pgpool.lua",
         ["pgpool.dashboard"] = "lua/pgpool/dashboard.lua",
         ["pgpool.health"] = "lua/pgpool/health.lua",
         ["pgpool.listener"] = "lua/pgpool/listener.lua",
         ["pgpool.metrics"] = "lua/pgpool/metrics.lua",
         ["pgpool.nginx"] = "lua/pgpool/nginx.lua",
      },
      lib = {
         ["pgpool.core"] = "build/luarocks/pgpool/core.so",
      },
   },
}
