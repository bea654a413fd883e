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
