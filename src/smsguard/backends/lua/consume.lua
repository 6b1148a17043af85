-- One decision, atomically: read the flags, check every counter, consume all or none, and
-- record the outcome in the statistics.
--
-- KEYS: the flag keys, then the counter keys (sorted sets: member = attempt token,
--       score = when that hit expires, in the app's epoch seconds), then the keys counters
--       refer to (unless, earn), then, if statistics are kept, the hash of this hour's.
-- ARGV: now, token, number of flags, number of counters, commit (1, or 0 to check only),
--       statistics (1 or 0); shadow (1 or 0) for each flag; for each counter its limit,
--       expires_at, shadow group (0: enforcing), the KEYS index of its unless key and of its
--       earn key (0: none), per_earned and amount (0: a log of hits in a sorted set; else a sum
--       in a string key, each attempt adding amount); then, with statistics: their expires_at, the number
--       of fields always counted, those fields, and the outcome fields: one per flag, one per
--       counter, then the one of an allowance.
-- Reply: {flag, n, shadowed..., count..., [wait...]}: flag is the 0-based index of the first
--        enforcing flag set, or -1 (then nothing more is read); n and the 0-based indexes, over
--        flags then counters, of the shadow items that would have denied (a flag set, a
--        counter full); a count per counter (its live hits before this attempt, -1 for one
--        passed over: its unless key holds a live hit); and, when an enforcing counter is
--        full, a wait per counter: seconds until it frees a slot, 0 for one with room and for
--        shadow ones. The caller picks which full counter the denial names; the statistics
--        name the same one (the longest wait, the first on a tie).
--
-- A shadow item never denies, and a shadow group (one shadow policy's counters) takes its hits
-- all or none, as if it enforced (semantics 15). A counter's limit grows by per_earned for each
-- live hit of its earn key (verifications in its scope).
local now = tonumber(ARGV[1])
local token = ARGV[2]
local nflags = tonumber(ARGV[3])
local ncounters = tonumber(ARGV[4])
local commit = ARGV[5] == '1'
local c0 = 6 + nflags -- ARGV[c0 + 7j - 6 .. c0 + 7j]: counter j's limit .. amount
local t0 = c0 + 7 * ncounters -- ARGV[t0 + 1 ..]: the statistics
local tally = ARGV[6] == '1' and KEYS[#KEYS] or nil
local after = '(' .. ARGV[1]

local function live(key)
  return redis.call('ZCOUNT', key, after, '+inf')
end

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
    if ARGV[6 + i] ~= '1' then
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
  local a = c0 + 7 * (j - 1)
  local unless = tonumber(ARGV[a + 4])
  if unless > 0 and live(KEYS[unless]) > 0 then
    counts[j] = -1 -- passed over: a verified number, say
    waits[j] = '0'
  else
    local key = KEYS[nflags + j]
    local limit = tonumber(ARGV[a + 1])
    local earn = tonumber(ARGV[a + 5])
    if earn > 0 then
      limit = limit + math.floor(tonumber(ARGV[a + 6]) * live(KEYS[earn]))
    end
    local amount = tonumber(ARGV[a + 7])
    local n
    if amount > 0 then
      n = tonumber(redis.call('GET', key) or '0')
    else
      n = live(key)
    end
    counts[j] = n
    waits[j] = '0'
    if amount > 0 and n + amount > limit then
      -- A sum: everything in it expires together, at the end of its period.
      if ARGV[a + 3] ~= '0' then
        full[ARGV[a + 3]] = true
        shadowed[#shadowed + 1] = nflags + j - 1
      else
        local wait = tonumber(ARGV[a + 2]) - now
        waits[j] = string.format('%.17g', wait)
        if wait > longest then
          denied, longest = j, wait
        end
      end
    elseif amount == 0 and n >= limit then
      local group = ARGV[a + 3]
      if group ~= '0' then
        full[group] = true
        shadowed[#shadowed + 1] = nflags + j - 1
      else
        -- The slot frees when the (n - limit + 1)-th oldest live hit expires.
        local frees = tonumber(redis.call('ZRANGEBYSCORE', key, after, '+inf',
                                          'WITHSCORES', 'LIMIT', n - limit, 1)[2])
        local wait = frees - now
        waits[j] = string.format('%.17g', wait)
        if wait > longest then
          denied, longest = j, wait
        end
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
  local a = c0 + 7 * (j - 1)
  if counts[j] >= 0 and not full[ARGV[a + 3]] then
    local key = KEYS[nflags + j]
    local expires_at = tonumber(ARGV[a + 2])
    if ARGV[a + 7] ~= '0' then
      redis.call('INCRBY', key, ARGV[a + 7])
    else
      redis.call('ZADD', key, expires_at, token)
      redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
    end
    redis.call('PEXPIRE', key, math.ceil((expires_at - now) * 1000) + 1000)
  end
end
record(nflags + ncounters)
return reply
