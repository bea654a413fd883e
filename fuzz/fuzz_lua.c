/*
 * fuzz_lua.c - the Lua side the fuzz targets over the codec share (see
 * fuzz.h): one state for the whole run, an allocator that fails when the
 * input says so, and a protected call that leaves the state clean (the
 * stack emptied, garbage collected) for the next input.
 */
#define FUZZ_LUA
#include "fuzz.h"

#include "lvalue.h"

/* Allocations left before the allocator fails; -1: no limit. */
static long budget = -1;
static long next_budget = -1;

static void *fuzz_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (budget == 0)
        return NULL;
    if (budget > 0)
        budget--;
    return realloc(ptr, nsize);
}

lua_State *fuzz_state(void)
{
    static lua_State *L;
    if (!L) {
        L = lua_newstate(fuzz_alloc, NULL);
        CHECK(L);
        luaL_newmetatable(L, LBYTEA_MT);
        lua_pop(L, 1);
    }
    return L;
}

int fuzz_types(unsigned *types, int max)
{
    unsigned element;
    const char *name;
    int n = 0;

    while (n < max - 2 && lvalue_type(n, &types[n], &element, &name))
        n++;
    types[n++] = 25;      /* text */
    types[n++] = 1700;    /* numeric */
    return n;
}

void *fuzz_begin(lua_State *L)
{
    budget = next_budget;
    return lua_touserdata(L, 1);
}

void fuzz_end(void)
{
    budget = -1;
}

void fuzz_settle(lua_State *L)
{
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
}

int fuzz_pcall(lua_State *L, lua_CFunction fn, void *ud, int allocations)
{
    int status;

    CHECK(lua_checkstack(L, 4));
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, ud);
    next_budget = allocations > 0 ? allocations : -1;
    status = lua_pcall(L, 1, LUA_MULTRET, 0);
    budget = next_budget = -1;
    return status;
}
