# pgpool - a process-wide PostgreSQL connection pool for Lua.
#
#   make            build build/lua5.4/pgpool/core.so (LUA=luajit|lua5.1|lua5.3 for others)
#   make test       build for Lua 5.4 and LuaJIT, start a throwaway PostgreSQL,
#                   run the busted specs under both, print one summary line
#   make test-pgbouncer
#                   the core specs (PGBOUNCER_SPECS) under Lua 5.4 through a real
#                   PgBouncer in transaction mode, every pool with a statement cache
#   make test SANITIZE=1
#                   the same specs on a module built with AddressSanitizer and
#                   UndefinedBehaviorSanitizer (build/asan), under Lua 5.4 only
#                   unless RUNTIMES is given
#   make demo       replay the incident: naive connections vs. pgpool (plain Lua,
#                   then OpenResty: examples/demo.sh)
#   make deps       install the Debian packages the above need (as root)
#   make bench      the side-by-side benchmark (BENCH_QUICK=1: one short round)
#   make fuzz       build the libFuzzer targets (clang) and run each for
#                   FUZZ_SECONDS (default 60) from its seed corpus; a crash fails
#   make rock       what LuaRocks runs (rockspec/lua-pgpool-scm-1.rockspec)
#   make clean

LUA        ?= lua5.4
RUNTIMES   ?= lua5.4 luajit
CC         ?= cc
BUILD      := build/$(LUA)
MODULE     := $(BUILD)/pgpool/core.so

# Lua headers per ABI (Debian layout); LUA_INCDIR overrides.
ifeq ($(LUA),luajit)
LUA_INCDIR ?= /usr/include/luajit-2.1
LUA_LIB    ?= -lluajit-5.1
else
LUA_INCDIR ?= /usr/include/$(LUA)
LUA_LIB    ?= -l$(LUA)
endif
# make test SANITIZE=1 runs busted under Lua 5.4 alone unless RUNTIMES is
# set. RUNTIMES=luajit works too, but ASan's stacks stop at LuaJIT's VM
# frames (no frame pointer), and the C code is the same.
SANITIZE   ?=
SANITIZERS := -fsanitize=address,undefined,float-cast-overflow \
              -fno-sanitize-recover=all -fno-omit-frame-pointer
ASAN_RUNTIMES := $(if $(filter file,$(origin RUNTIMES)),lua5.4,$(RUNTIMES))
TEST_RUNTIMES := $(if $(filter 1,$(SANITIZE)),$(ASAN_RUNTIMES),$(RUNTIMES))
TEST_BUILDS   := $(if $(filter 1,$(SANITIZE)),asan)

PG_INCDIR  ?= $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
PG_LIBDIR  ?= $(shell pg_config --libdir 2>/dev/null || echo /usr/lib/x86_64-linux-gnu)

WARNINGS   := -Wall -Wextra -pedantic -Wshadow -Wmissing-prototypes \
              -Wstrict-prototypes -Wpointer-arith -Wcast-qual
CFLAGS     ?= -O2 -g
LIBFLAG    ?= -shared
ALL_CFLAGS := -std=c99 -fPIC -fvisibility=hidden $(WARNINGS) $(CFLAGS) \
              -I$(LUA_INCDIR) -I$(PG_INCDIR)
LDLIBS     := -L$(PG_LIBDIR) -lpq -lpthread -ldl

SOURCES    := $(wildcard src/*.c)
HEADERS    := $(wildcard src/*.h)
OBJECTS    := $(SOURCES:src/%.c=$(BUILD)/%.o)

# Debian packages: to build, to test, and for the demo.
DEBS_BUILD := gcc make pkg-config libpq-dev lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev
DEBS_TEST  := $(DEBS_BUILD) lua-busted lua-luv postgresql-15 luarocks \
              liblua5.1-0-dev liblua5.3-dev lua5.1 lua5.3 \
              nginx-light libnginx-mod-http-lua lua-cjson apache2-utils curl openssl pgbouncer \
              prometheus chromium
DEBS_DEMO  := $(DEBS_TEST)
# The benchmark: LuaSQL to compare with, valgrind for instruction counts,
# taskset (util-linux) and ps (procps) to pin client and server, time for
# the CPU time of pgbench, wrk to load the OpenResty example.
DEBS_BENCH := $(DEBS_TEST) lua-sql-postgres valgrind util-linux procps time wrk

.PHONY: bench-storm all module build tsan asan rock test test-pgbouncer demo deps deps-test deps-bench deps-fuzz bench fuzz clean

all: module $(BUILD)/lthreads $(BUILD)/lfork.so

module: $(MODULE)

$(BUILD)/%.o: src/%.c $(HEADERS) | $(BUILD)/pgpool
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(MODULE): $(OBJECTS)
	$(CC) $(LIBFLAG) $(CFLAGS) -o $@ $(OBJECTS) $(LDLIBS)

$(BUILD)/pgpool:
	mkdir -p $@

# Test tool: one script in N Lua states on N threads of one process.
$(BUILD)/lthreads: spec/support/lthreads.c | $(BUILD)/pgpool
	$(CC) -std=c99 $(WARNINGS) $(CFLAGS) -I$(LUA_INCDIR) $< -o $@ $(LUA_LIB) -lpthread -lm -ldl

# Test-only fork() for spec/fork_spec.lua.
$(BUILD)/lfork.so: spec/support/lfork.c | $(BUILD)/pgpool
	$(CC) -std=c99 -shared -fPIC $(WARNINGS) $(CFLAGS) -I$(LUA_INCDIR) $< -o $@

# The module and lthreads under ThreadSanitizer, for spec/threads_spec.lua.
tsan:
	@$(MAKE) --no-print-directory LUA=lua5.4 BUILD=build/tsan CFLAGS="-O1 -g -fsanitize=thread" all

# The module, lthreads and lfork under ASan + UBSan, per runtime that
# make test SANITIZE=1 runs (spec/support/run-specs.sh preloads the ASan
# runtime into busted).
asan:
	@for rt in $(ASAN_RUNTIMES); do \
		$(MAKE) --no-print-directory LUA=$$rt BUILD=build/asan/$$rt CFLAGS="-O1 -g $(SANITIZERS)" all || exit 1; \
	done

# One module per ABI named in RUNTIMES.
build:
	@for rt in $(RUNTIMES); do $(MAKE) --no-print-directory LUA=$$rt all || exit 1; done

# LuaRocks' build step (build.type "make" in the rockspec): it passes its CC,
# CFLAGS, LIBFLAG and LUA_INCDIR and installs build/luarocks/pgpool/core.so.
# Always from scratch: the one directory serves whichever Lua LuaRocks targets.
rock:
	rm -rf build/luarocks
	@$(MAKE) --no-print-directory BUILD=build/luarocks module

# The LuaJIT build is made under SANITIZE too: nginx loads it (openresty_spec).
test: deps-test build tsan $(TEST_BUILDS)
	@spec/support/with-pg.sh env RUNTIMES="$(TEST_RUNTIMES)" SANITIZE="$(SANITIZE)" \
		spec/support/run-specs.sh $(SPECS)

# The specs of pgpool against "a server", run through PgBouncer (pool_mode
# = transaction) in front of the throwaway one, with a statement cache of
# PGBOUNCER_STATEMENT_CACHE for every pool that does not set its own
# (spec/support/pgbouncer.sh, helpers.lua). Left out: the specs that start
# servers of their own or stop, fill or cut off the test server (failover,
# tls, capacity, faults, storm, fault_proxy: what they test is between
# pgpool and a server, and PgBouncer would answer in its place),
# statement_names (starts its own PgBouncer), nginx and the build-only ones.
# Under Lua 5.4 unless RUNTIMES is given.
PGBOUNCER_SPECS := $(addprefix spec/,$(addsuffix _spec.lua,support query pool values arrays \
                   transaction pipeline statement_cache lifecycle threads hostile_input \
                   server_errors notices cancel copy deadlines escape retry secrets \
                   replicas fork signals max_shared metrics health rows stream_timeout \
                   typed_values caller_errors hooks hogs))
PGBOUNCER_STATEMENT_CACHE ?= 32
PGBOUNCER_RUNTIMES := $(if $(filter file,$(origin RUNTIMES)),lua5.4,$(RUNTIMES))

test-pgbouncer: deps-test tsan
	@$(MAKE) --no-print-directory RUNTIMES="$(PGBOUNCER_RUNTIMES)" build
	@PGPOOL_TEST_VIA=pgbouncer PGPOOL_TEST_STATEMENT_CACHE=$(PGBOUNCER_STATEMENT_CACHE) \
		spec/support/with-pg.sh env RUNTIMES="$(PGBOUNCER_RUNTIMES)" \
		spec/support/run-specs.sh $(or $(SPECS),$(PGBOUNCER_SPECS))

# Plain Lua first, then OpenResty (skipped with a note when nginx is missing).
demo: deps build
	@PGPOOL_TEST_MAX_CONNECTIONS=30 spec/support/with-pg.sh sh examples/demo.sh

# Install missing Debian packages (as root), or say what to install.
deps:
	@DEBS="$(DEBS_DEMO)" sh .ci/deps.sh

deps-test:
	@DEBS="$(DEBS_TEST)" sh .ci/deps.sh

deps-bench:
	@DEBS="$(DEBS_BENCH)" sh .ci/deps.sh

# Benchmark tool: the same statements through libpq directly (bench/run.sh).
build/rawpq: bench/rawpq.c
	@mkdir -p build
	$(CC) -std=c99 $(WARNINGS) $(CFLAGS) -I$(PG_INCDIR) $< -o $@ -L$(PG_LIBDIR) -lpq

# The storm figures (bench/storm.lua): a down, a full and a recovering
# server; BENCH_STORM_CPATH measures another build beside this one.
bench-storm: deps-bench module
	@LUA_PATH="lua/?.lua;;" LUA_CPATH="$${BENCH_STORM_CPATH:-$(BUILD)/?.so};;" \
	  spec/support/with-pg.sh lua5.4 bench/storm.lua

bench: deps-bench build build/rawpq
	@BENCH_QUICK="$(BENCH_QUICK)" sh bench/run.sh

# libFuzzer targets (fuzz/fuzz_<target>.c) over the codec and the bindings,
# built with clang under ASan and UBSan against Lua 5.4. Each runs from its
# seeds in fuzz/corpus/<target>/ (left untouched: new inputs go to
# build/fuzz/corpus-<target>/) and a crash, leak or failed check stops the
# run with its input saved as build/fuzz/<target>-crash-*.
# First runs fuzz/oom_sweep.c: the codec out of memory at every allocation.
# FUZZ_SEED fixes libFuzzer's seed (CI uses 1, so that a CI run repeats a
# prefix of what a longer run with that seed tried); 0 is a new seed a run.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SEED    ?= 0
FUZZ_TARGETS := arraytext decode encode results redact
FUZZ_CFLAGS  := -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=all $(WARNINGS) -Isrc \
                -I/usr/include/lua5.4 -I$(PG_INCDIR)
FUZZ_LIBS    := -llua5.4 -lm -lpthread
FUZZ_SRC_arraytext := src/arraytext.c
FUZZ_SRC_decode    := fuzz/fuzz_lua.c src/lvalue.c src/arraytext.c
FUZZ_SRC_encode    := fuzz/fuzz_lua.c src/lparam.c src/lvalue.c src/arraytext.c \
                      src/lcommon.c src/log.c
FUZZ_SRC_results   := fuzz/fuzz_lua.c src/lresult.c src/lvalue.c src/arraytext.c \
                      src/lcommon.c src/log.c src/pq.c src/clock.c
FUZZ_LIBS_results  := -L$(PG_LIBDIR) -lpq
FUZZ_SRC_redact    := src/clock.c src/log.c
FUZZ_LIBS_redact   := -L$(PG_LIBDIR) -lpq

build/fuzz/%: fuzz/fuzz_%.c fuzz/fuzz.h fuzz/fuzz_lua.c $(SOURCES) $(HEADERS)
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(FUZZ_SRC_$*) -o $@ $(FUZZ_LIBS_$*) $(FUZZ_LIBS)

deps-fuzz:
	@DEBS="clang liblua5.4-dev libpq-dev" sh .ci/deps.sh

build/fuzz/oom_sweep: fuzz/oom_sweep.c fuzz/fuzz.h fuzz/fuzz_lua.c src/lvalue.c src/arraytext.c $(HEADERS)
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(filter-out -fsanitize=fuzzer%,$(FUZZ_CFLAGS)) -fsanitize=address,undefined \
	  fuzz/oom_sweep.c fuzz/fuzz_lua.c src/lvalue.c src/arraytext.c -o $@ $(FUZZ_LIBS)

fuzz: deps-fuzz build/fuzz/oom_sweep $(FUZZ_TARGETS:%=build/fuzz/%)
	@build/fuzz/oom_sweep
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus-$$t; \
	  echo "== fuzz $$t ($(FUZZ_SECONDS) s)"; \
	  build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -seed=$(FUZZ_SEED) -print_final_stats=1 \
	    -artifact_prefix=build/fuzz/$$t- build/fuzz/corpus-$$t fuzz/corpus/$$t \
	    2>build/fuzz/$$t.log || { tail -n 40 build/fuzz/$$t.log; exit 1; }; \
	  grep -E '^Done|stat::number_of_executed_units' build/fuzz/$$t.log; \
	done

clean:
	rm -rf build
