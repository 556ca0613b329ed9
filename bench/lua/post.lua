-- wrk script for the hsm-vault benchmarks: POST one body, or rotate through many.
--
-- Configured through the environment (set by bench/wrk.py, never on the command line):
--   BENCH_BODIES   file with one request body per line (JSON); one line = a static request
--   BENCH_HEADERS  file with "Name: value" lines (the service token lives here, mode 0600)
--   BENCH_VERDICTS "1" to classify OTP responses ("valid":true / "replayed" / other)
-- done() prints one line "BENCH_JSON {...}" that bench/wrk.py parses.

local function read_lines(path)
  local lines = {}
  if path == nil or path == "" then
    return lines
  end
  local file = assert(io.open(path, "rb"))
  for line in file:lines() do
    if line ~= "" then
      lines[#lines + 1] = line
    end
  end
  file:close()
  return lines
end

local bodies = read_lines(os.getenv("BENCH_BODIES"))
local headers = { ["Content-Type"] = "application/json" }
for _, line in ipairs(read_lines(os.getenv("BENCH_HEADERS"))) do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then
    headers[name] = value
  end
end

wrk.method = "POST"
for name, value in pairs(headers) do
  wrk.headers[name] = value
end

if #bodies == 1 then
  wrk.body = bodies[1]
else
  -- Pre-format every request once per thread; request() only hands the next one out.
  local requests = {}
  local next_index = 0
  function init(args)
    for i, body in ipairs(bodies) do
      requests[i] = wrk.format("POST", wrk.path, wrk.headers, body)
    end
  end
  function request()
    next_index = next_index % #requests + 1
    return requests[next_index]
  end
end

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

if os.getenv("BENCH_VERDICTS") == "1" then
  accepted, replayed, other = 0, 0, 0
  function response(status, _, body)
    if status >= 200 and status < 300 and body then
      if body:find('"valid":true', 1, true) then
        accepted = accepted + 1
      elseif body:find("replay", 1, true) then
        replayed = replayed + 1
      else
        other = other + 1
      end
    end
  end
end

function done(summary, latency, _)
  local counts = { accepted = 0, replayed = 0, other = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(counts) do
      counts[name] = counts[name] + (tonumber(thread:get(name)) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,'
      .. '"status_errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,'
      .. '"max_us":%d,"accepted":%d,"replayed":%d,"other":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max, counts.accepted, counts.replayed, counts.other
  ))
end
