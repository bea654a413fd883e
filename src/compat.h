/*
 * compat.h - the few shims that let one source build for Lua 5.1/LuaJIT,
 * 5.2, 5.3 and 5.4, and LPGPOOL_INTERNAL, the mark on what the Lua-facing
 * files share but the module does not export (only luaopen_pgpool_core is).
 * Written for pgpool; nothing else lives here.
 *
 * In 5.1 mode (vanilla 5.1 and LuaJIT) the 5.2+ auxiliary functions are
 * replaced by static versions below, whatever the headers declare, so the
 * same code builds against either.
 */
#ifndef PGPOOL_COMPAT_H
#define PGPOOL_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#define LPGPOOL_INTERNAL __attribute__((visibility("hidden")))

#if LUA_VERSION_NUM == 501

#ifndef LUA_OK
#define LUA_OK 0
#endif

#define lua_rawlen(L, i) lua_objlen((L), (i))

static inline void compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    int i;
    for (; l->name; l++) {
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#undef luaL_setfuncs
#define luaL_setfuncs compat_setfuncs

static inline void *compat_testudata(lua_State *L, int i, const char *tname)
{
    void *p = lua_touserdata(L, i);
    if (p && lua_getmetatable(L, i)) {
        int same;
        luaL_getmetatable(L, tname);
        same = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (same)
            return p;
    }
    return NULL;
}
#undef luaL_testudata
#define luaL_testudata compat_testudata

static inline void compat_setmetatable(lua_State *L, const char *tname)
{
    luaL_getmetatable(L, tname);
    lua_setmetatable(L, -2);
}
#undef luaL_setmetatable
#define luaL_setmetatable compat_setmetatable

/* debug.traceback(msg, level), through the debug library. */
static inline void compat_traceback(lua_State *L, lua_State *L1, const char *msg,
                             int level)
{
    (void)L1;
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_remove(L, -2);
    lua_pushstring(L, msg ? msg : "");   /* LuaJIT returns a nil message as is */
    lua_pushinteger(L, level);
    if (lua_pcall(L, 2, 1, 0) != 0 || !lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_pushstring(L, msg ? msg : "");
    }
}
#undef luaL_traceback
#define luaL_traceback compat_traceback

#undef luaL_newlib
#define luaL_newlib(L, l) \
    (lua_createtable((L), 0, (int)(sizeof(l) / sizeof((l)[0]) - 1)), \
     luaL_setfuncs((L), (l), 0))

/* 5.1 has no integer subtype: a number is written as an integer when it is
 * integral (see lvalue.c). */
#define compat_isinteger(L, i) 0

#elif LUA_VERSION_NUM >= 503
#define compat_isinteger(L, i) lua_isinteger((L), (i))
#else
#define compat_isinteger(L, i) 0
#endif

/* Has lua_Integer at least 64 bits of range for int8 values. */
#if LUA_VERSION_NUM >= 503
#define COMPAT_INT64 1
#else
#define COMPAT_INT64 0
#endif

#endif
