-- pgpool from a checkout, built and installed by LuaRocks. From the top of
-- the repository:
--
--   luarocks --lua-version 5.4 make rockspec/pgpool-scm-1.rockspec
--   luarocks --lua-version 5.1 make rockspec/pgpool-scm-1.rockspec \
--       LUA_INCDIR="$(pkg-config --variable=includedir luajit)"    # LuaJIT
--
-- The C core is compiled by the project's Makefile (`make rock`), so a rock
-- gets the same flags as `make` (-std=c99, -fvisibility=hidden: only
-- luaopen_pgpool_core is exported), and libpq is found the PostgreSQL way,
-- through pg_config (or PG_INCDIR / PG_LIBDIR in the environment).
-- LuaRocks 3.8 only looks for headers in <prefix>/include, which misses
-- Debian's /usr/include/postgresql/libpq-fe.h, so there is no
-- external_dependencies entry for it.

rockspec_format = "3.0"
package = "pgpool"
version = "scm-1"

source = {
   -- `luarocks make` builds the working tree and never fetches this. There
   -- is no public repository yet; put its git+https:// address here when
   -- there is (until then `luarocks build`/`install` of this file fail).
   url = "git+file://.",
}

description = {
   summary = "A process-wide PostgreSQL connection pool for Lua, in C over libpq",
   detailed = [[
One pool per OS process behind a mutex: every Lua state in the process (the
main script, luv threads, OpenResty worker-thread VMs) shares the same pool
and the same hard cap on connections. Lua 5.1 to 5.4 and LuaJIT.
]],
   -- No LICENSE file yet: the project has to choose one before a release.
   license = "not yet chosen (no LICENSE file)",
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
         ["pgpool.nginx"] = "lua/pgpool/nginx.lua",
      },
      lib = {
         ["pgpool.core"] = "build/luarocks/pgpool/core.so",
      },
   },
}
