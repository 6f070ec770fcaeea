-- One event per POST, unique event ids, users and videos drawn from the benchmark set.
-- The API key comes from FYP_KEY (benchmarks/server.py sets it).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("FYP_KEY")
local n = 0
local prefix = tostring(math.random(1, 1e9))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = string.format(
    '{"event_id":"s%s-%d","user_id":"u%d","video_id":"v%d","type":"play","watch_ms":%d}',
    prefix, n, n % 2000, n % 1000, 1000 + n % 30000)
  return wrk.format(nil, "/v1/events", nil, body)
end
