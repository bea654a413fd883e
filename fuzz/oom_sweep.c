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

#include "lvalue.h"

#define ROUNDS 600
#define REPEATS 8

static int round_body(lua_State *L)
{
    int i;

    fuzz_end();                  /* the table itself is built unlimited */
    lua_createtable(L, 200, 0);
    for (i = 1; i <= 200; i++) {
        lua_pushfstring(L, "element %d with \"quotes\" and \\ slashes", i);
        lua_rawseti(L, -2, i);
    }
    lua_replace(L, 1);
    fuzz_begin(L);               /* from here, the round's budget */
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
    lua_State *L = fuzz_state();
    long failed = 0;
    int budget;

    for (budget = 1; budget <= ROUNDS; budget++) {
        if (fuzz_pcall(L, round_body, NULL, budget) != LUA_OK)
            failed++;
        fuzz_settle(L);
    }
    lua_close(L);
    CHECK(failed > 0 && failed < ROUNDS);   /* both outcomes were tried */
    printf("oom_sweep: %d rounds, %ld ran out of memory\n", ROUNDS, failed);
    return 0;
}
