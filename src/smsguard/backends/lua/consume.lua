-- One decision, atomically: read the flags, check every counter, consume all or none.
--
-- KEYS: the flag keys, then the counter keys (sorted sets: member = attempt token,
--       score = when that hit expires, in the app's epoch seconds).
-- ARGV: now, token, number of flags, commit (1, or 0 to check only), then limit and
--       expires_at for each counter.
-- Reply: {flag, count..., [wait...]}: flag is the 0-based index of the first flag set, or -1
--        (then nothing more is read); a count per counter (its live hits before this
--        attempt); and, when any counter is full, a wait per counter: seconds until it frees
--        a slot, 0 for one with room. The caller picks which full counter the denial names.
local now = tonumber(ARGV[1])
local token = ARGV[2]
local nflags = tonumber(ARGV[3])
local commit = ARGV[4] == '1'

for i = 1, nflags do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return {i - 1}
  end
end

-- Check: read only, so a denial writes nothing.
local reply = {-1}
local waits = {}
local full = false
for j = nflags + 1, #KEYS do
  local key = KEYS[j]
  local limit = tonumber(ARGV[3 + 2 * (j - nflags)])
  local n = redis.call('ZCOUNT', key, '(' .. ARGV[1], '+inf')
  reply[#reply + 1] = n
  local wait = '0'
  if n >= limit then
    -- The slot frees when the (n - limit + 1)-th oldest live hit expires.
    local frees = tonumber(redis.call('ZRANGEBYSCORE', key, '(' .. ARGV[1], '+inf',
                                      'WITHSCORES', 'LIMIT', n - limit, 1)[2])
    wait = string.format('%.17g', frees - now)
    full = true
  end
  waits[#waits + 1] = wait
end
if full then
  for _, wait in ipairs(waits) do
    reply[#reply + 1] = wait
  end
  return reply
end
if not commit then
  return reply
end

-- Commit. ZADD is the first write: over maxmemory Redis refuses it (OOM) before anything is
-- written, so the decision fails whole, as in any outage. Then drop expired hits and keep the
-- key until this hit expires; the TTL is relative to the app's clock, so skew between the app
-- and Redis never ends a live hit early.
for j = nflags + 1, #KEYS do
  local key = KEYS[j]
  local expires_at = tonumber(ARGV[4 + 2 * (j - nflags)])
  redis.call('ZADD', key, expires_at, token)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  redis.call('PEXPIRE', key, math.ceil((expires_at - now) * 1000) + 1000)
end
return reply
