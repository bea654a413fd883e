/*
 * lthreads.c - run one Lua script in N Lua states on N OS threads at once,
 * all in one process, then once more in a fresh state on the main thread.
 *
 *   lthreads N script.lua [args...]
 *
 * Thread i (1..N) calls the script's chunk with (i, args...); the final run
 * gets (0, args...). Each run's first result is printed as "i: result", an
 * error as "i: ERROR: msg"; the exit status is the number of runs that
 * raised. LUA_PATH and LUA_CPATH are honoured as by the lua interpreter.
 *
 * A test and benchmark tool: it proves that every Lua state of a process
 * shares pgpool's process-wide pools. Built by the Makefile, also under
 * ThreadSanitizer (make tsan).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static pthread_mutex_t print_mu = PTHREAD_MUTEX_INITIALIZER;
static int script_argc;
static char **script_argv;

struct run {
    pthread_t thread;
    int index;
    int failed;
};

static void *run_script(void *arg)
{
    struct run *run = arg;
    lua_State *L = luaL_newstate();
    const char *text;
    int i, rc;

    luaL_openlibs(L);
    rc = luaL_loadfile(L, script_argv[0]);
    if (rc == LUA_OK) {
        lua_pushinteger(L, run->index);
        for (i = 1; i < script_argc; i++)
            lua_pushstring(L, script_argv[i]);
        rc = lua_pcall(L, script_argc, 1, 0);
    }
    text = lua_tostring(L, -1);
    pthread_mutex_lock(&print_mu);
    printf("%d: %s%s\n", run->index, rc == LUA_OK ? "" : "ERROR: ",
           text ? text : luaL_typename(L, -1));
    fflush(stdout);
    pthread_mutex_unlock(&print_mu);
    run->failed = rc != LUA_OK;
    lua_close(L);
    return NULL;
}

int main(int argc, char **argv)
{
    struct run *runs, final;
    int n, i, failed = 0;

    if (argc < 3 || (n = atoi(argv[1])) < 1) {
        fprintf(stderr, "usage: lthreads N script.lua [args...]\n");
        return 2;
    }
    script_argc = argc - 2;
    script_argv = argv + 2;
    runs = calloc((size_t)n, sizeof *runs);
    if (!runs)
        return 2;
    for (i = 0; i < n; i++) {
        runs[i].index = i + 1;
        if (pthread_create(&runs[i].thread, NULL, run_script, &runs[i]) != 0) {
            fprintf(stderr, "lthreads: cannot start thread %d\n", i + 1);
            return 2;
        }
    }
    for (i = 0; i < n; i++) {
        pthread_join(runs[i].thread, NULL);
        failed += runs[i].failed;
    }
    final.index = 0;
    run_script(&final);
    failed += final.failed;
    free(runs);
    return failed;
}
