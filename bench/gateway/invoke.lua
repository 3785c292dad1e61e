-- wrk script: POST one body (BENCH_BODY, or the bytes of the file BENCH_BODY_FILE) with
-- BENCH_CONTENT_TYPE and optional BENCH_AUTHORIZATION and BENCH_HEADER_LENGTH (the binary tensor
-- extension's Inference-Header-Content-Length) headers; prints one JSON line (prefixed
-- BENCH_RESULT) that run.py parses.

wrk.method = "POST"
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file ~= nil and body_file ~= "" then
  local file = assert(io.open(body_file, "rb"))
  wrk.body = file:read("*a")
  file:close()
else
  wrk.body = os.getenv("BENCH_BODY")
end
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "text/csv"
wrk.headers["Accept"] = os.getenv("BENCH_ACCEPT") or "text/csv"
local authorization = os.getenv("BENCH_AUTHORIZATION")
if authorization ~= nil and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end
local header_length = os.getenv("BENCH_HEADER_LENGTH")
if header_length ~= nil and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"status_errors":%d,"timeouts":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout,
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0),
    latency.max, latency.mean))
end
