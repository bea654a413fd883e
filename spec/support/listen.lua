-- A luv TCP server on 127.0.0.1 at a free port in 20000-31999, like
-- ports.sh picks for the test server: ports from 32768 up are the kernel's
-- for outgoing connections. For the fault proxy and its spec.
--
--   local server, port = require('spec.support.listen')(on_connection)
local uv = require 'luv'

return function(on_connection)
  for _ = 1, 50 do
    local port = math.random(20000, 31999)
    local tcp = uv.new_tcp()
    if tcp:bind('127.0.0.1', port) and tcp:listen(64, on_connection) then
      return tcp, port
    end
    tcp:close()
  end
  error('no free TCP port in 20000-31999')
end
