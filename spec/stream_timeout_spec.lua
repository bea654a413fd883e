-- conn:rows and conn:copy_out without a statement table are bounded by the
-- pool's query_timeout, as query is (both waited without limit before).
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'

describe('query_timeout on streams', function()
  local pool, conn
  local open, close = helpers.held_connection('stream_qt', { max = 2, query_timeout = 0.3, log_level = 'error' },
    function(p, c) pool, conn = p, c end)
  before_each(open)
  after_each(close)

  it('bounds conn:rows without a statement table', function()
    local t0 = helpers.now()
    local results = {}
    for row, _, code in conn:rows('select pg_sleep(10)') do results[#results + 1] = { row, code } end
    assert.truthy(helpers.now() - t0 < 4, helpers.now() - t0)
    assert.are.same({ { false, 'timeout' } }, results)
  end)

  it('bounds conn:copy_out without a statement table', function()
    local t0 = helpers.now()
    local res, _, code = conn:copy_out('copy (select pg_sleep(10)) to stdout', function() end)
    assert.truthy(helpers.now() - t0 < 4, helpers.now() - t0)
    assert.is_nil(res)
    assert.are.equal('timeout', code)
  end)
end)

-- Rows already on their way when a row's wait passes its deadline: the
-- cancel is sent, and what the caller sees next is the timeout, not rows
-- that came late and then the server's 57014 "canceling statement" (a
-- stream's next wait used to forget that it had cancelled).
describe('a row stream cancelled at its deadline', function()
  it('ends with code "timeout" even when rows were already on their way', function()
    local proxy = helpers.fault_proxy{ mode = 'delay', arg = 400 }
    finally(function() proxy:stop() end)
    local slow = pgpool.configure{ name = 'stream_late_rows', max = 1, log_level = 'off',
      query_timeout = 0.5, conninfo = proxy:conninfo() .. ' application_name=stream_late_rows' }
    finally(function() slow:shutdown{ timeout = 1 } end)
    local conn = assert(slow:acquire{ timeout = 5 })
    local rows, codes = 0, {}
    for row, msg, code in conn:rows('select g, pg_sleep(0.2) from generate_series(1, 10) g') do
      if row then rows = rows + 1 else codes[#codes + 1] = code .. ': ' .. tostring(msg) end
    end
    assert.are.equal(1, #codes, table.concat(codes, '; '))
    assert.are.equal('timeout', codes[1]:match('^[^:]*'), codes[1])
    assert.are.equal(0, rows, rows .. ' rows after the deadline of the first')
    -- the connection is clean afterwards
    local res = assert(conn:query('select 1 as one'))
    assert.are.equal(1, res[1].one)
    conn:release()
  end)
end)
