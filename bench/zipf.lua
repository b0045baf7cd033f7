-- wrk script for bench/run-cache: each request picks one of the objects listed in
-- $BENCH_ZIPF_OBJECTS ("weight path" lines, most popular first; the weights follow Zipf's law)
-- with a seeded PRNG ($BENCH_ZIPF_SEED), so that every proxy gets the same sequence. At the
-- end it prints how many of the requests were for /static/ objects (for the static share of
-- the backend's load).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local paths, cdf = {}, {}

function init(args)
  local total = 0
  for line in io.lines(os.getenv("BENCH_ZIPF_OBJECTS")) do
    local weight, path = line:match("^(%S+) (%S+)$")
    total = total + tonumber(weight)
    paths[#paths + 1] = path
    cdf[#cdf + 1] = total
  end
  for i = 1, #cdf do
    cdf[i] = cdf[i] / total
  end
  math.randomseed(tonumber(os.getenv("BENCH_ZIPF_SEED") or "1"))
  static, other = 0, 0
end

function request()
  local u = math.random()
  local lo, hi = 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  local path = paths[lo]
  if path:sub(1, 8) == "/static/" then static = static + 1 else other = other + 1 end
  return wrk.format(nil, path)
end

function done(summary, latency, requests)
  local s, o = 0, 0
  for _, t in ipairs(threads) do
    s = s + t:get("static")
    o = o + t:get("other")
  end
  io.write(string.format("zipf: static %d other %d\n", s, o))
end
