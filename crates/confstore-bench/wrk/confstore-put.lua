-- wrk script: durable PUTs to confstore's REST API, one value per request.
--
-- The benchmark (src/bin/server/wrk.rs) prepends a line `local P = {...}` with the
-- parameters: service, token, value_bytes, keys (the service's preloaded keys, cycled so
-- the service keeps its size; 0 = a new key per request) and threads (wrk's -t).
-- Each wrk thread writes its own keys (disjoint between threads); every value is unique.
-- Answers other than 2xx are counted and reported by done(); the benchmark fails on any.

-- Globals, not locals: setup() sets `id` in each thread, done() reads `bad` and `first_bad`.
id = 0
bad = 0
first_bad = ""
local n = 0

local FILLER = "endpoint=https://billing.internal:8443;pool=4..32;retries=3;tls=on;"

local function value(i)
  local v = string.format("wrk-t%02d-%09d-", id, i)
  while #v < P.value_bytes do
    v = v .. FILLER
  end
  return string.sub(v, 1, P.value_bytes)
end

local function key(i)
  if P.keys > 0 then
    local per = math.max(1, math.floor(P.keys / P.threads))
    return string.format("k%05d", (id + P.threads * (i % per)) % P.keys)
  end
  return string.format("w%02d-%09d", id, i)
end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local headers = {
  ["Authorization"] = "Bearer " .. P.token,
  ["Content-Type"] = "application/json",
}

function request()
  local path = "/api/v1/services/" .. P.service .. "/values/" .. key(n)
  local body = '{"value":"' .. value(n) .. '"}'
  n = n + 1
  return wrk.format("PUT", path, headers, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

function done(summary, latency, requests)
  local total = 0
  local first = ""
  for _, t in ipairs(threads) do
    total = total + (t:get("bad") or 0)
    local f = t:get("first_bad") or ""
    if first == "" then
      first = f
    end
  end
  io.write(string.format("wrk-script: non-2xx %d\n", total))
  if first ~= "" then
    io.write("wrk-script: first non-2xx: " .. string.gsub(first, "\n", " ") .. "\n")
  end
end
