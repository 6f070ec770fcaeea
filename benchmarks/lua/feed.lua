-- GET a feed of 10 for a user drawn at random from the KuaiRec ids 0..7175.
-- The API key comes from FYP_KEY (benchmarks/server.py sets it).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("FYP_KEY")
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/users/" .. math.random(0, 7175) .. "/feed?n=10")
end
