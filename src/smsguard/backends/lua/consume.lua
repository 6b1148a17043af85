-- One decision, atomically: read the flags, check every counter, consume all or none.
--
-- KEYS: the flag keys, then the counter keys (sorted sets: member = attempt token,
--       score = when that hit expires, in the app's epoch seconds).
-- ARGV: now, token, number of flags, commit (1, or 0 to check only), then limit and
--       expires_at for each counter.
-- Reply: {flag, denied, retry_after, count...}: flag and denied are 0-based indexes or -1;
--        counts are each counter's live hits before this attempt.
local now = tonumber(ARGV[1])
local token = ARGV[2]
local nflags = tonumber(ARGV[3])
local commit = ARGV[4] == '1'

for i = 1, nflags do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return {i - 1, -1, '0'}
  end
end

-- Check: read only, so a denial writes nothing.
local reply = {-1, -1, '0'}
local wait = 0
for j = nflags + 1, #KEYS do
  local key = KEYS[j]
  local limit = tonumber(ARGV[3 + 2 * (j - nflags)])
  local n = redis.call('ZCOUNT', key, '(' .. ARGV[1], '+inf')
  reply[#reply + 1] = n
  if n >= limit then
    -- The slot frees when the (n - limit + 1)-th oldest live hit expires.
    local frees = tonumber(redis.call('ZRANGEBYSCORE', key, '(' .. ARGV[1], '+inf',
                                      'WITHSCORES', 'LIMIT', n - limit, 1)[2])
    if reply[2] < 0 or frees - now > wait then
      reply[2], wait = j - nflags - 1, frees - now
    end
  end
end
if reply[2] >= 0 or not commit then
  reply[3] = string.format('%.17g', wait)
  return reply
end

-- Commit: drop expired hits, add this one, and keep the key until it expires. The TTL is
-- relative to the app's clock, so skew between the app and Redis never ends a live hit early.
for j = nflags + 1, #KEYS do
  local key = KEYS[j]
  local expires_at = tonumber(ARGV[4 + 2 * (j - nflags)])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  redis.call('ZADD', key, expires_at, token)
  redis.call('PEXPIRE', key, math.ceil((expires_at - now) * 1000) + 1000)
end
return reply
