-- Sanity checks for the test infrastructure itself (spec/support/).
-- Run from the repository root (./?.lua is on the default path).
local helpers = require 'spec.support.helpers'

describe('test support', function()
  it('has a test server answering via psql', function()
    assert.are.equal('1', helpers.psql('select 1'))
    assert.are.equal('pgpool_test', helpers.psql('select current_database()'))
  end)

  it('counts no backends for an unused application_name', function()
    assert.are.equal(0, helpers.count_backends('nobody-here'))
  end)

  it('reports psql errors', function()
    local ok, err = pcall(helpers.psql, 'select * from no_such_table')
    assert.is_false(ok)
    assert.matches('no_such_table', err)
  end)

  it('has a monotonic clock, sleep and wait_until', function()
    local t0 = helpers.now()
    helpers.sleep(0.05)
    assert.is_true(helpers.now() - t0 >= 0.04)
    assert.is_true(helpers.wait_until(function() return true end, 1))
    assert.is_false(helpers.wait_until(function() return false end, 0.1, 0.02))
  end)

  it('reads the server log', function()
    assert.matches('ready to accept connections', helpers.server_log())
  end)
end)
