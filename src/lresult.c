/*
 * lresult.c - results and errors to Lua.
 *
 * A result is an array of rows, each row a table column name -> value (NULL
 * as pgpool.null, the NULL light userdata), plus res.columns, res.affected
 * and res.command. Only plain tables, strings, numbers, booleans and the
 * null sentinel are produced, so results cross ngx.run_worker_thread.
 *
 * Values arrive in text format and are converted by type OID by the value
 * codec (lvalue.c).
 *
 * The result table is built in protected mode (build_result, kept in the
 * registry so that calling it allocates nothing): whatever raises while it
 * is built (a malformed value, Lua running out of memory), the PGresult is
 * freed before the error goes on, and what the build allocated is Lua's.
 */
#include <stdlib.h>
#include <string.h>

#include "lresult.h"

#include "lcommon.h"
#include "lvalue.h"

/* Push the result key kept in upvalue upv (literal when called without the
 * module's upvalues). */
static void push_key(lua_State *L, int upv, const char *literal)
{
    lua_pushvalue(L, lua_upvalueindex(upv));
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_pushstring(L, literal);
    }
}

/* The command tag without its counts: "INSERT 0 1" -> "INSERT". */
static void push_command(lua_State *L, const char *tag)
{
    size_t end = strlen(tag);
    for (;;) {
        size_t start = end;
        while (start > 0 && tag[start - 1] >= '0' && tag[start - 1] <= '9')
            start--;
        if (start == end || start == 0 || tag[start - 1] != ' ')
            break;
        end = start - 1;
    }
    lua_pushlstring(L, tag, end);
}

/* Push each column's decoder (lresult_set_decoder) or nil when any column
 * has one: returns the index of the first; 0, with nothing pushed, in the
 * common case of none. */
/* Set once any Lua state of the process registers a decoder: until then
 * a result does not even look for the registry table (the query path). */
static int decoders_registered;    /* atomic */

static int push_decoders(lua_State *L, const unsigned *types, int cols)
{
    int col, any = 0, table;

    if (!__atomic_load_n(&decoders_registered, __ATOMIC_RELAXED))
        return 0;
    lua_getfield(L, LUA_REGISTRYINDEX, LRESULT_DECODERS);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    table = lua_gettop(L);
    for (col = 0; col < cols; col++) {
        lua_rawgeti(L, table, (int)types[col]);
        any |= !lua_isnil(L, -1);
    }
    lua_remove(L, table);
    if (!any) {
        lua_pop(L, cols);
        return 0;
    }
    return lua_gettop(L) - cols + 1;
}

/* Push row `row` of r as a table (column name -> value); the names are
 * at names .. names + cols - 1, the type OIDs in types, the decoders (when
 * decoders is not 0) from decoders on. Raises for a malformed value. */
static void push_row(lua_State *L, const pq_result *r, int row, int names,
                     const unsigned *types, int decoders, int cols)
{
    int col;
    lua_createtable(L, 0, cols);
    for (col = 0; col < cols; col++) {
        size_t len = 0;
        const char *v = pq_result_value(r, row, col, &len);
        lua_pushvalue(L, names + col);
        if (!v) {
            lua_pushlightuserdata(L, NULL);
        } else if (decoders && !lua_isnil(L, decoders + col)) {
            lua_pushvalue(L, decoders + col);
            lua_pushlstring(L, v, len);
            lua_call(L, 1, 1);
        } else if (!lvalue_push(L, types[col], v, len))
            luaL_error(L, "pgpool: malformed value in column %d (type %d)",
                       col + 1, (int)types[col]);
        lua_rawset(L, -3);
    }
}

/* lresult_push_row's work, run protected: (r) -> its first row's table. */
static int build_row(lua_State *L)
{
    pq_result *r = (pq_result *)lua_touserdata(L, 1);
    int cols = pq_result_cols(r), col, names, decoders;
    unsigned types_inline[32], *types = types_inline;

    if (!lua_checkstack(L, 2 * cols + 8))
        return luaL_error(L, "pgpool: too many columns");
    if (cols > 32)
        types = (unsigned *)lua_newuserdata(L, sizeof *types * (size_t)cols);
    names = lua_gettop(L) + 1;
    for (col = 0; col < cols; col++) {
        lua_pushstring(L, pq_result_colname(r, col));
        types[col] = pq_result_coltype(r, col);
    }
    decoders = push_decoders(L, types, cols);
    push_row(L, r, 0, names, types, decoders, cols);
    return 1;
}

/* lresult_push's work, run protected: (r as a light userdata) -> the
 * result table. Raises for a malformed value. */
static int build_result(lua_State *L)
{
    pq_result *r = (pq_result *)lua_touserdata(L, 1);
    int rows = pq_result_rows(r), cols = pq_result_cols(r);
    int res, names, decoders, row, col;
    unsigned types_inline[32], *types = types_inline;
    const char *affected;
    long long n;

    if (!lua_checkstack(L, 2 * cols + 8))
        return luaL_error(L, "pgpool: too many columns");
    if (cols > 32)
        types = (unsigned *)lua_newuserdata(L, sizeof *types * (size_t)cols);
    lua_createtable(L, rows, 3);
    res = lua_gettop(L);
    names = res + 1;
    for (col = 0; col < cols; col++) {
        lua_pushstring(L, pq_result_colname(r, col));
        types[col] = pq_result_coltype(r, col);
    }
    decoders = push_decoders(L, types, cols);
    for (row = 0; row < rows; row++) {
        push_row(L, r, row, names, types, decoders, cols);
        lua_rawseti(L, res, row + 1);
    }
    push_key(L, LUPV_KEY_COLUMNS, "columns");
    lua_createtable(L, cols, 0);
    for (col = 0; col < cols; col++) {
        lua_pushvalue(L, names + col);
        lua_rawseti(L, -2, col + 1);
    }
    lua_rawset(L, res);
    lua_settop(L, res);

    affected = pq_result_affected(r);
    if (affected && *affected) {
        push_key(L, LUPV_KEY_AFFECTED, "affected");
        if (lvalue_parse_integer(affected, strlen(affected), &n))
            lua_pushinteger(L, (lua_Integer)n);
        else
            lua_pushnumber(L, (lua_Number)strtod(affected, NULL));
        lua_rawset(L, res);
    }
    push_key(L, LUPV_KEY_COMMAND, "command");
    push_command(L, pq_result_command(r));
    lua_rawset(L, res);
    return 1;
}

/* The registry keys of build_result and build_row. */
static char build_result_key, build_row_key;

void lresult_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "build", build_result },
        { "row", build_row },
        { NULL, NULL },
    };
    lua_newtable(L);
    lcommon_setfuncs(L, fns, "", 0);      /* for the result keys */
    lua_pushlightuserdata(L, (void *)&build_result_key);
    lua_getfield(L, -2, "build");
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&build_row_key);
    lua_getfield(L, -2, "row");
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
}

/* Call the builder kept at key on r, protected; r is freed either way. */
static void build_with(lua_State *L, char *key, pq_result *r)
{
    int status;

    if (!lua_checkstack(L, 2)) {
        pq_result_free(r);
        luaL_error(L, "pgpool: stack overflow");
    }
    lua_pushlightuserdata(L, key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, r);
    status = lua_pcall(L, 1, 1, 0);
    pq_result_free(r);
    if (status != LUA_OK)
        lua_error(L);    /* the error pcall left on the stack */
}

int lresult_set_decoder(lua_State *L)
{
    lua_Integer oid = luaL_checkinteger(L, 1);
    if (oid <= 0 || oid > 0xffffffffLL)
        return luaL_argerror(L, 1, "not a type OID");
    if (!lua_isnil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    __atomic_store_n(&decoders_registered, 1, __ATOMIC_RELAXED);
    lua_settop(L, 2);
    lua_getfield(L, LUA_REGISTRYINDEX, LRESULT_DECODERS);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, LRESULT_DECODERS);
    }
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (int)oid);
    return 0;
}

void lresult_push(lua_State *L, pq_result *r)
{
    build_with(L, &build_result_key, r);
}

void lresult_push_row(lua_State *L, pq_result *r)
{
    build_with(L, &build_row_key, r);
}

/* The server's error fields as a table. */
static void push_info(lua_State *L, const pq_error *err)
{
    int i;
    lua_createtable(L, 0, 4);
    for (i = 0; i < PQ_FIELD_COUNT; i++) {
        if (!err->fields[i][0])
            continue;
        if (i == PQ_FIELD_POSITION)
            lua_pushinteger(L, (lua_Integer)atoi(err->fields[i]));
        else
            lua_pushstring(L, err->fields[i]);
        lua_setfield(L, -2, pq_field_names[i]);
    }
    /* Whether the statement may have run (pgx's SafeToRetry, inverted). */
    if (err->safe_to_retry) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "safe_to_retry");
    }
    if (err->outcome_unknown) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "outcome_unknown");
    }
}

int lresult_push_error(lua_State *L, const pq_error *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err->message[0] ? err->message : err->code);
    lua_pushstring(L, err->code);
    push_info(L, err);
    return 4;
}

void lresult_push_error_table(lua_State *L, const pq_error *err)
{
    lua_createtable(L, 0, 3);
    lua_pushstring(L, err->message[0] ? err->message : err->code);
    lua_setfield(L, -2, "error");
    lua_pushstring(L, err->code);
    lua_setfield(L, -2, "code");
    push_info(L, err);
    lua_setfield(L, -2, "info");
}
