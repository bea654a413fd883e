-- pgpool.metrics() passes the tool Prometheus users run on exposition
-- text: promtool check metrics (Debian's prometheus package).
local helpers = require 'spec.support.helpers'
local pgpool = require 'pgpool'
local opts = helpers.pool_options

describe('metrics', function()
  after_each(function() pgpool.shutdown_all{ timeout = 1 } end)

  it('pass promtool check metrics on real output from several pools', function()
    local found = os.execute('command -v promtool >/dev/null 2>&1')
    if found ~= true and found ~= 0 then
      return pending('promtool not installed (make deps installs prometheus)')
    end
    local a = pgpool.configure(opts('metrics-a', { max = 4, max_shared = 8 }))
    local b = pgpool.configure(opts('metrics "b" \\ c', { max = 2 }))
    assert.truthy(a:query('select 1'))
    assert.truthy(b:query('select 1'))
    assert.is_nil(b:query('select * from no_such_table'))
    local file = helpers.tmpname()
    helpers.write_file(file, pgpool.metrics())
    local p = assert(io.popen('promtool check metrics < ' .. file .. ' 2>&1; echo "rc=$?"'))
    local out = p:read('*a')
    p:close()
    os.remove(file)
    assert.are.equal('rc=0\n', out)
  end)

  it('names no gauge *_total', function()
    local pool = pgpool.configure(opts('metrics-names', { max = 3 }))
    assert.truthy(pool:query('select 1'))
    local text = pgpool.metrics()
    for name, kind in text:gmatch('# TYPE (%S+) (%S+)') do
      if kind ~= 'counter' then assert.is_nil(name:match('_total$'), name) end
    end
    assert.truthy(helpers.contains(text, ('pgpool_connections_open{pool="metrics-names",pid="%d"} 1\n'):format(require('pgpool.core').pid())), text)
  end)

  it('labels each process by pid when given several snapshots', function()
    local pool = pgpool.configure(opts('metrics-pids', { max = 3 }))
    assert.truthy(pool:query('select 1'))
    local mine = pgpool.snapshot()
    local other = pgpool.snapshot()
    other.pid = mine.pid + 1
    local text = pgpool.metrics({ mine, other })
    for _, pid in ipairs{ mine.pid, other.pid } do
      assert.truthy(helpers.contains(text,
        ('pgpool_queries_total{pool="metrics-pids",pid="%d"} 1\n'):format(pid)), text)
    end
    local _, families = text:gsub('# TYPE pgpool_queries_total counter', '')
    assert.are.equal(1, families)
  end)
end)
