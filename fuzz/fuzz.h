/*
 * fuzz.h - what the libFuzzer targets share: CHECK, and for the targets
 * over Lua (fuzz_lua.c) one Lua 5.4 state whose allocator fails on demand,
 * the codec's type OIDs, and a protected call.
 *
 * A target is one fuzz_<name>.c with LLVMFuzzerTestOneInput; the Makefile
 * builds it with the src/ files it tests (make fuzz).
 */
#ifndef PGPOOL_FUZZ_H
#define PGPOOL_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A property of the code under test: a failure is a crash libFuzzer keeps. */
#define CHECK(x) \
    do { \
        if (!(x)) { \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #x); \
            abort(); \
        } \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef FUZZ_LUA
#include <lua.h>
#include <lauxlib.h>

/* The state, made on first use (with the pgpool.bytea metatable). */
lua_State *fuzz_state(void);

/* Fill types with the OIDs the codec converts (its tables' array and
 * scalar types), then text and numeric; returns how many (at most max). */
int fuzz_types(unsigned *types, int max);

/* Call fn(ud) protected, letting only `allocations` allocations succeed
 * from when fn calls fuzz_begin (0: no limit): Lua then raises out of
 * memory halfway. Returns lua_pcall's status, with what fn returned or the
 * error on the stack. */
int fuzz_pcall(lua_State *L, lua_CFunction fn, void *ud, int allocations);

/* In fn: the ud given to fuzz_pcall; the allocation limit starts now. */
void *fuzz_begin(lua_State *L);

/* Lift the limit (in fn, to check what the code under test did). */
void fuzz_end(void);

/* Empty the stack and collect the garbage, for the next input. */
void fuzz_settle(lua_State *L);
#endif

#endif
