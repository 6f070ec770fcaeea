-- Batches of 500 events per POST with unique event ids.
-- The API key comes from FYP_KEY (benchmarks/server.py sets it).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("FYP_KEY")
local n = 0
local prefix = tostring(math.random(1, 1e9))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local parts = {}
  for k = 1, 500 do
    n = n + 1
    parts[k] = string.format(
      '{"event_id":"b%s-%d","user_id":"u%d","video_id":"v%d","type":"play","watch_ms":%d}',
      prefix, n, n % 2000, n % 1000, 1000 + n % 30000)
  end
  return wrk.format(nil, "/v1/events/batch", nil, '{"events":[' .. table.concat(parts, ",") .. ']}')
end
