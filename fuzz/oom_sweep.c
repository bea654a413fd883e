/*
 * oom_sweep.c - the codec when Lua runs out of memory at every allocation
 * in turn, with the garbage of earlier calls still waiting for its
 * finalisers: a plain program (no fuzzing), deterministic, that make fuzz
 * runs first under AddressSanitizer and LeakSanitizer.
 *
 * Each round lets the allocator succeed `budget` times and then fail, and
 * inside it encodes the same array literal several times (each encode
 * leaves garbage; a later allocation runs the collector, whose finaliser
 * calls can fail then) and decodes it back. A leak shows at lua_close.
 */
#define FUZZ_LUA
#include "fuzz.h"

#include <string.h>

#include "lvalue.h"

#define ROUNDS 600
#define REPEATS 8

static long budget = -1;

static void *sweep_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
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

static long round_budget;

static int round_body(lua_State *L)
{
    int i;

    lua_createtable(L, 200, 0);
    for (i = 1; i <= 200; i++) {
        lua_pushfstring(L, "element %d with \"quotes\" and \\ slashes", i);
        lua_rawseti(L, -2, i);
    }
    budget = round_budget;
    for (i = 0; i < REPEATS; i++) {
        size_t len;
        const char *text;

        CHECK(lvalue_encode_array(L, 1));
        text = lua_tolstring(L, -1, &len);
        lvalue_push_array(L, text, len, 25);
        lua_settop(L, 1);
    }
    return 0;
}

int main(void)
{
    lua_State *L = lua_newstate(sweep_alloc, NULL);
    long failed = 0;

    CHECK(L);
    luaL_newmetatable(L, LBYTEA_MT);
    lua_pop(L, 1);
    for (round_budget = 1; round_budget <= ROUNDS; round_budget++) {
        lua_pushcfunction(L, round_body);
        if (lua_pcall(L, 0, 0, 0) != LUA_OK)
            failed++;
        budget = -1;
        lua_settop(L, 0);
        lua_gc(L, LUA_GCCOLLECT, 0);
    }
    lua_close(L);
    CHECK(failed > 0 && failed < ROUNDS);   /* both outcomes were tried */
    printf("oom_sweep: %d rounds, %ld ran out of memory\n", ROUNDS, failed);
    return 0;
}
