-- One decision, atomically: read the flags, check every counter, consume all or none, and
-- record the outcome in the statistics.
--
-- KEYS: the flag keys, then the counter keys (sorted sets: member = attempt token,
--       score = when that hit expires, in the app's epoch seconds), then, if statistics are
--       kept, the hash of this hour's statistics.
-- ARGV: now, token, number of flags, number of counters, commit (1, or 0 to check only);
--       shadow (1 or 0) for each flag; limit, expires_at and shadow group (0: enforcing) for
--       each counter; then,
--       with statistics: their expires_at, the number of fields always counted, those fields,
--       and the outcome fields: one per flag, one per counter, then the one of an allowance.
-- Reply: {flag, n, shadowed..., count..., [wait...]}: flag is the 0-based index of the first
--        enforcing flag set, or -1 (then nothing more is read); n and the 0-based indexes, over
--        flags then counters, of the shadow items that would have denied (a flag set, a
--        counter full); a count per counter (its live hits before this attempt); and, when an
--        enforcing counter is full, a wait per counter: seconds until it frees a slot, 0 for
--        one with room and for shadow ones. The caller picks which full counter the denial
--        names; the statistics name the same one (the longest wait, the first on a tie).
--
-- A shadow item never denies, and a shadow group (one shadow policy's counters) takes its hits
-- all or none, as if it enforced (semantics 15).
local now = tonumber(ARGV[1])
local token = ARGV[2]
local nflags = tonumber(ARGV[3])
local ncounters = tonumber(ARGV[4])
local commit = ARGV[5] == '1'
local c0 = 5 + nflags -- ARGV[c0 + 3j - 2 .. c0 + 3j]: limit, expires_at, shadow of counter j
local t0 = c0 + 3 * ncounters -- ARGV[t0 + 1 ..]: the statistics
local tally = KEYS[nflags + ncounters + 1]

local shadowed = {}

-- Statistics: +1 to the fields always counted, to the outcome's field (0-based over flags then
-- counters, or nflags + ncounters for an allowance) and to each shadowed item's field.
local function record(outcome)
  if not tally then
    return
  end
  local nfields = tonumber(ARGV[t0 + 2])
  local outcomes = t0 + 3 + nfields
  for i = t0 + 3, outcomes - 1 do
    if redis.call('HINCRBY', tally, ARGV[i], 1) == 1 and i == t0 + 3 then
      redis.call('PEXPIRE', tally, math.ceil((tonumber(ARGV[t0 + 1]) - now) * 1000))
    end
  end
  redis.call('HINCRBY', tally, ARGV[outcomes + outcome], 1)
  local seen = {}
  for _, i in ipairs(shadowed) do
    local name = ARGV[outcomes + i]
    if not seen[name] then -- a policy counts once, however many of its items would deny
      seen[name] = true
      redis.call('HINCRBY', tally, name, 1)
    end
  end
end

local function reply_head(flag)
  local reply = {flag, #shadowed}
  for _, i in ipairs(shadowed) do
    reply[#reply + 1] = i
  end
  return reply
end

for i = 1, nflags do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if ARGV[5 + i] ~= '1' then
      record(i - 1)
      return reply_head(i - 1)
    end
    shadowed[#shadowed + 1] = i - 1
  end
end

-- Check: read only, so a denial writes no hit.
local counts = {}
local waits = {}
local full = {} -- shadow groups with a full counter
local denied, longest = -1, 0
for j = 1, ncounters do
  local key = KEYS[nflags + j]
  local limit = tonumber(ARGV[c0 + 3 * j - 2])
  local n = redis.call('ZCOUNT', key, '(' .. ARGV[1], '+inf')
  counts[j] = n
  waits[j] = '0'
  if n >= limit then
    local group = ARGV[c0 + 3 * j]
    if group ~= '0' then
      full[group] = true
      shadowed[#shadowed + 1] = nflags + j - 1
    else
      -- The slot frees when the (n - limit + 1)-th oldest live hit expires.
      local frees = tonumber(redis.call('ZRANGEBYSCORE', key, '(' .. ARGV[1], '+inf',
                                        'WITHSCORES', 'LIMIT', n - limit, 1)[2])
      local wait = frees - now
      waits[j] = string.format('%.17g', wait)
      if wait > longest then
        denied, longest = j, wait
      end
    end
  end
end

local reply = reply_head(-1)
for j = 1, ncounters do
  reply[#reply + 1] = counts[j]
end
if denied >= 0 then
  for j = 1, ncounters do
    reply[#reply + 1] = waits[j]
  end
  if commit then
    record(nflags + denied - 1)
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
for j = 1, ncounters do
  if not full[ARGV[c0 + 3 * j]] then
    local key = KEYS[nflags + j]
    local expires_at = tonumber(ARGV[c0 + 3 * j - 1])
    redis.call('ZADD', key, expires_at, token)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
    redis.call('PEXPIRE', key, math.ceil((expires_at - now) * 1000) + 1000)
  end
end
record(nflags + ncounters)
return reply
