-- Scrolling sessions with behaviour: each user drawn at random from the KuaiRec ids
-- 0..7175 asks for a page of 10, then sends an event about the page's first video (a
-- play: long or skipped), and only once that event is acknowledged asks for the next
-- page with the cursor, 5 pages in all. So every page after the first is asked for
-- after an event of the user's own, as an app's feed is, and the server must rank it
-- afresh (read-your-writes). wrk reports events and pages together: 5 pages and 4
-- events per session. The key (FYP_KEY) needs the feed and ingest roles.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("FYP_KEY")
wrk.headers["Content-Type"] = "application/json"
math.randomseed(os.time())
local prefix = tostring(math.random(1, 1e9))
local queue = {}    -- actions ready to send, oldest first
local waiting = {}  -- event id -> the page to ask for once the event is acknowledged
local sent = 0

request = function()
  local action = table.remove(queue, 1)
  if action == nil then -- a new session
    return wrk.format("GET", "/v1/users/" .. math.random(0, 7175) .. "/feed?n=10")
  end
  if action.kind == "event" then
    sent = sent + 1
    local id = prefix .. "-" .. sent
    waiting[id] = action
    local watch = (sent % 3 == 0) and 600 or 40000 -- a skip, or a long play
    local body = string.format(
      '{"event_id":"%s","user_id":"%s","video_id":"%s","type":"play","watch_ms":%d}',
      id, action.user, action.video, watch)
    return wrk.format("POST", "/v1/events", nil, body)
  end
  return wrk.format("GET", "/v1/users/" .. action.user .. "/feed?n=10&cursor=" .. action.cursor)
end

local pages = {} -- user -> pages served in the current session

response = function(status, headers, body)
  local cursor = body:match('"next_cursor":"([^"]+)"')
  if cursor ~= nil then
    local user = body:match('"user_id":"([^"]+)"')
    local video = body:match('"video_id":"([^"]+)"')
    local n = (pages[user] or 0) + 1
    pages[user] = n
    if n < 5 and video ~= nil then
      table.insert(queue, {kind = "event", user = user, video = video, cursor = cursor})
    else
      pages[user] = nil
    end
    return
  end
  local id = body:match('"event_id":"([^"]+)"')
  local action = id and waiting[id]
  if action then
    waiting[id] = nil
    table.insert(queue, {kind = "feed", user = action.user, cursor = action.cursor})
  end
end
