-- COPY through query and exec is refused (conn:copy_in / conn:copy_out are the
-- way): it fails at once with code "unsupported" and leaves the connection
-- idle and usable (COPY IN refused, COPY OUT read to its end), with or
-- without query_timeout.
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

local create, drop = helpers.tagged_table('copy_spec_t')

describe('COPY through query and exec', function()
  setup(create)
  teardown(drop)
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  local cases = {
    { 'query', 'copy copy_spec_t(tag) from stdin' },
    { 'exec', 'copy copy_spec_t(tag) from stdin' },
    { 'query', 'copy (select g from generate_series(1, 100000) g) to stdout' },
    { 'exec', 'copy (select 1) to stdout' },
    { 'exec', 'select 1; copy (select 1) to stdout; select 2' },
  }
  for _, query_timeout in ipairs{ 0, 5 } do
    for _, case in ipairs(cases) do
      local method, sql = case[1], case[2]
      it(('fails %s("%s") with "unsupported" and a usable idle connection (query_timeout = %s)'):format(method, sql, query_timeout), function()
        local pool = pgpool.configure(opts('copy', { max = 1, query_timeout = query_timeout }))
        local conn = assert(pool:acquire())
        local t0 = helpers.now()
        local res, msg, code = conn[method](conn, sql)
        assert.is_nil(res)
        assert.are.equal('unsupported', code, msg)
        assert.truthy(msg:find('COPY is not supported', 1, true), msg)
        assert.is_true(helpers.now() - t0 < 3)
        assert.are.equal(7, assert(conn:query('select 7 as v'))[1].v)
        assert.are.equal('idle', helpers.session_state(conn))
        conn:release()
        local st = pool:stats()
        assert.are.equal(0, st.closed_broken)
        assert.are.equal(0, st.rollbacks)
        assert.are.equal(1, st.total)
      end)
    end
  end

  it('fails COPY inside a transaction and leaves only that transaction failed', function()
    local pool = pgpool.configure(opts('copy-txn', { max = 1 }))
    local conn = assert(pool:acquire())
    assert(conn:exec('begin'))
    local res, msg, code = conn:query('copy copy_spec_t(tag) from stdin')
    assert.is_nil(res)
    assert.are.equal('unsupported', code, msg)
    assert(conn:exec('rollback'))
    assert.are.equal(1, assert(conn:query('select 1 as v'))[1].v)
    conn:release()
    assert.are.equal(0, pool:stats().closed_broken)
  end)
end)
