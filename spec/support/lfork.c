/*
 * lfork.c - a test-only Lua module (Debian's lua-posix has no 5.4 build):
 * fork(), wait(pid) -> exit status, getpid(), exit_now(code). Built per runtime by the
 * Makefile for spec/fork_spec.lua; not part of pgpool.
 */
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

static int lfork_fork(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)fork());
    return 1;
}

static int lfork_wait(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int status = 0;
    if (waitpid(pid, &status, 0) < 0)
        return luaL_error(L, "waitpid failed");
    lua_pushinteger(L, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 1;
}

/* _exit(code) after flushing stdio: no atexit handlers, LeakSanitizer's
 * among them, whose check can crash in a forked child of a threaded
 * process (its tracer looks for the parent's threads). */
static int lfork_exit_now(lua_State *L)
{
    int code = (int)luaL_checkinteger(L, 1);
    fflush(NULL);
    _exit(code);
    return 0;
}

static int lfork_getpid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

int luaopen_lfork(lua_State *L);

int luaopen_lfork(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, lfork_fork);
    lua_setfield(L, -2, "fork");
    lua_pushcfunction(L, lfork_wait);
    lua_setfield(L, -2, "wait");
    lua_pushcfunction(L, lfork_getpid);
    lua_setfield(L, -2, "getpid");
    lua_pushcfunction(L, lfork_exit_now);
    lua_setfield(L, -2, "exit_now");
    return 1;
}
