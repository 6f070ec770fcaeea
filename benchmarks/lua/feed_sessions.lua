-- Scrolling sessions: each user drawn at random from the KuaiRec ids 0..7175 asks
-- for 5 pages of 10 in a row (the requests of the 8 connections interleave).
-- The API key comes from FYP_KEY (benchmarks/server.py sets it).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("FYP_KEY")
math.randomseed(os.time())
local sent = 0
local user = 0
request = function()
  if sent % 5 == 0 then
    user = math.random(0, 7175)
  end
  sent = sent + 1
  return wrk.format("GET", "/v1/users/" .. user .. "/feed?n=10")
end
