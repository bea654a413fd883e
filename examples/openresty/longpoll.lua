-- The long-poll behind /listen, run in a worker thread
-- (ngx.run_worker_thread "pgpool", "longpoll", "wait"): LISTEN on one
-- channel of the default pool, wait up to `timeout` seconds for one
-- notification, stop listening. Only plain values cross the thread
-- boundary and the thread VM that runs the next call may be another one,
-- so the listener lives for the one call:
-- notifications sent between two polls are not heard (keep a listener in a
-- long-lived process when every one matters).
local pgpool = require("pgpool")

local longpoll = {}

-- channel, payload, pid; or nil, msg, code ("timeout" when none came).
function longpoll.wait(channel, timeout)
  local listener, msg, code = pgpool.listen(channel)
  if not listener then return nil, msg, code end
  local got_channel, payload, pid = listener:wait(timeout)
  listener:close()
  return got_channel, payload, pid
end

return longpoll
