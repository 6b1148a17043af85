-- One decision, atomically: read the flags, check every counter, consume all or none.
--
-- Counters keep hit times, not expiry times, in logs: sorted sets (member: the attempt's token,
-- after its tag if it has one; score: when the hit was taken, as an integer scale of the app's
-- epoch seconds, which Redis keeps and compares without parsing text). One log answers several
-- windows, each counted from its own bound: a number's log serves its minute, its hour and its
-- calendar day, so a number costs one key. Sums (money spent) are integers.
--
-- Written for the server's time: each redis.call costs thousands of instructions (arguments,
-- command lookup, a reply encoded and parsed back), and so does each argument and each call of
-- a Lua library function (tonumber, string.*); plain Lua is cheap. So a log is first counted
-- from its least bound and, with no hit there, not further (each of its windows starts there
-- or later); the common counter is two arguments, read with one tonumber; and what the caller
-- can work out (when a full counter frees a slot) it works out.
--
-- KEYS: the flag keys, then one key per group (a log, or a sum), then the keys counters refer
--       to (unless, earn: sets of marks whose scores are when each mark expires, in seconds).
-- ARGV: now (seconds), token, number of flags, number of groups, commit (0 to check only;
--       else where a hit of this attempt's is found once it was admitted: 1, the first group,
--       a log every counter of which takes it; 2, the last key, a set of the tokens admitted in
--       the last minute, which two more arguments at the very end trim and expire: the score
--       of the oldest token kept, its time to live in ms), the score of a hit taken now;
--       shadow (1 or 0) for each flag; then per group:
--       its number of counters, its time to live in ms after this hit, the least bound of its
--       counters (no hit before it counts: such hits are dropped) and its tag with a colon (''
--       for none; the attempt's hit carries it when a counter that counts by it takes it);
--       then per counter: its spec and its bound (the score of the first hit it counts). The
--       spec is a number, its limit: negative for a fixed period (a calendar day: its hits all
--       free when it ends), and a half more for a counter that counts only the hits with the
--       group's tag; or, for a counter with other options, "limit group match unless earn
--       per_earned amount": shadow group (0: enforcing), match (1: it counts by the tag), the
--       KEYS indexes of unless and earn (0: none), and amount (0: a log; else a sum, alone in
--       its group, each attempt adding amount).
-- Reply: {flag, n, count..., [frees...], shadowed...}: flag is the 0-based index of the first
--        enforcing flag set, or -1 (then no count follows); a count per counter (its live hits
--        before this attempt; -1 for one passed over: its unless key holds a live mark); when
--        an enforcing counter is full, what frees each: -1 for one that is not full (or is a
--        shadow one), 0 for a fixed period or a sum, else the score of the hit whose window
--        end frees a slot; and the n 0-based indexes, over flags then counters, of the shadow
--        items that would have denied (a flag set, a counter full).
--
-- A shadow item never denies, and a shadow group (one shadow policy's counters) takes its hits
-- all or none, as if it enforced (semantics 15). A counter's limit grows by per_earned for each
-- live mark of its earn key.
--
-- Sent again, a decision answers as it did. A client that loses a reply resends the command
-- (redis-py's Retry, a Cluster client's own retries), and the script then finds its own hit:
-- counted, it would deny the very attempt it admitted. So a run that finds this attempt's hit
-- where every admitted run leaves one is a re-run of an admitted decision: it allows, counts
-- without its own hits and writes nothing. A run that denied wrote nothing, so its re-run simply
-- decides again.
local nflags = tonumber(ARGV[3])
local ngroups = tonumber(ARGV[4])
local token = ARGV[2]
local shadowed = {}
local function reply_with(reply)
  reply[2] = #shadowed
  for _, i in ipairs(shadowed) do
    reply[#reply + 1] = i
  end
  return reply
end

local counted = {} -- per log: its hits from its least bound (nil: not counted)
local again = false -- a re-run of an admitted decision
if ARGV[5] == '1' then -- hits from the first log's least bound, this attempt's among them if any
  local first = 7 + nflags
  counted[1] = redis.call('ZCOUNT', KEYS[nflags + 1], ARGV[first + 2], '+inf')
  again = counted[1] > 0 and redis.call('ZSCORE', KEYS[nflags + 1], ARGV[first + 3] .. token) ~= false
elseif ARGV[5] == '2' then
  again = redis.call('ZSCORE', KEYS[#KEYS], token) ~= false
end

if nflags > 0 then
  local set = redis.call('MGET', unpack(KEYS, 1, nflags))
  for i = 1, nflags do
    if set[i] then
      if ARGV[6 + i] ~= '1' then
        if not again then -- (a re-run passes: its first run found the flag unset)
          return reply_with({i - 1, 0})
        end
      else
        shadowed[#shadowed + 1] = i - 1
      end
    end
  end
end

-- Check: read only, so a denial writes nothing.
local reply, r = {-1, 0}, 2 -- r: the last slot filled
local frees = nil -- per full enforcing counter: what frees it
local groups, tags = {}, {} -- per counter, if it has one: its shadow group, its tag
local full = {} -- shadow groups with a full counter
local sums = {} -- per group that is a sum: its amount
local ns = {} -- per group: its number of counters
local j = 0 -- counters so far, over every group
local a = 7 + nflags -- ARGV index of the current group

for g = 1, ngroups do
  local key, n, least = KEYS[nflags + g], tonumber(ARGV[a]), ARGV[a + 2]
  local from = counted[g] -- hits from the least bound, once read
  local mine = nil -- in a re-run: the member of this attempt's hit in this log, or false
  ns[g] = n
  for b = a + 4, a + 2 + 2 * n, 2 do
    j = j + 1
    local spec, bound = ARGV[b], ARGV[b + 1]
    local limit, tag, amount = tonumber(spec), nil, nil
    if not limit then
      local group, match, unless, earn, per
      limit, group, match, unless, earn, per, amount = string.match(spec, '(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)')
      limit = tonumber(limit)
      tag = match == '1' and ARGV[a + 3] or nil
      if group ~= '0' then
        groups[j] = group
      end
      if amount == '0' then
        amount = nil
      else
        sums[g] = amount
      end
      if unless ~= '0' and redis.call('ZCOUNT', KEYS[tonumber(unless)], '(' .. ARGV[1], '+inf') > 0 then
        limit = nil -- passed over: a verified number, say
      elseif earn ~= '0' then
        local earned = redis.call('ZCOUNT', KEYS[tonumber(earn)], '(' .. ARGV[1], '+inf')
        limit = (limit < 0 and -1 or 1) * (math.abs(limit) + math.floor(tonumber(per) * earned))
      end
      tags[j] = tag
    elseif limit % 1 ~= 0 then -- a limit and a half: it counts the hits with the group's tag
      limit = limit < 0 and limit + 0.5 or limit - 0.5
      tag = ARGV[a + 3]
      tags[j] = tag
    end
    local fixed = limit and limit < 0
    if fixed then
      limit = -limit
    end
    local count, over, at = -1, false, 0 -- a counter passed over keeps the count -1
    if not limit then
      -- passed over: neither counted nor taken
    elseif amount then -- a sum
      count = tonumber(redis.call('GET', key) or '0')
      if again then -- without this attempt's amount (a shadow sum's, as near as can be told)
        count = math.max(count - tonumber(amount), 0)
      end
      over = count + tonumber(amount) > limit
    else
      if not from then
        from = redis.call('ZCOUNT', key, least, '+inf')
        counted[g] = from
      end
      if again and mine == nil then -- its hit carries the tag of the counter that took it, if any
        mine = ARGV[a + 3] .. token
        if not redis.call('ZSCORE', key, mine) then
          mine = redis.call('ZSCORE', key, token) and token
        end
      end
      if from == 0 then
        count = 0 -- no hit in any window of this log
      elseif tag then -- only its tagged hits: few, in a short window
        local members = redis.call('ZRANGEBYSCORE', key, bound, '+inf')
        count = 0
        for h = #members, 1, -1 do
          if string.sub(members[h], 1, #tag) == tag and members[h] ~= mine then
            count = count + 1
            if count == limit then
              at = members[h]
            end
          end
        end
        over = count >= limit
        if over and not fixed then
          at = redis.call('ZSCORE', key, at)
        end
      else
        count = bound == least and from or redis.call('ZCOUNT', key, bound, '+inf')
        if mine then
          count = count - 1
        end
        over = count >= limit
        if over and not fixed then -- its slot frees when the limit-th newest hit leaves
          at = redis.call('ZREVRANGEBYSCORE', key, '+inf', bound, 'WITHSCORES', 'LIMIT', limit - 1, 1)[2]
        end
      end
    end
    r = r + 1
    reply[r] = count
    if over then
      if groups[j] then
        full[groups[j]] = true
        shadowed[#shadowed + 1] = nflags + j - 1
      elseif not again then -- (a re-run allows: its first run did, and took its hits)
        frees = frees or {}
        frees[j] = fixed and 0 or at
      end
    end
  end
  a = a + 4 + 2 * n
end

if frees then
  for c = 1, j do
    reply[r + c] = frees[c] or -1
  end
  return reply_with(reply)
end
if ARGV[5] == '0' or again then
  return reply_with(reply)
end

-- Commit: each group takes one hit, unless all its counters are passed over or of a full
-- shadow group. ZADD or INCRBY is the first write: over maxmemory Redis refuses it (OOM)
-- before anything is written (a script that has written may write on), so the decision fails
-- whole, as in any outage. TTLs are relative to the app's clock, so skew between the app and
-- Redis never ends a live hit early.
j = 0
a = 7 + nflags
local wrote = false
for g = 1, ngroups do
  local key, n = KEYS[nflags + g], ns[g]
  local takes, tag = false, nil
  for _ = 1, n do
    j = j + 1
    if reply[2 + j] >= 0 and not (groups[j] and full[groups[j]]) then
      takes, tag = true, tag or tags[j]
    end
  end
  if takes then
    if sums[g] then
      redis.call('INCRBY', key, sums[g])
    else
      redis.call('ZADD', key, ARGV[6], tag and tag .. ARGV[2] or ARGV[2])
      -- Drop the hits no counter counts (before the least bound), if there are any. With no
      -- hit from the least bound there is none: the key expired with its last hit.
      local from = counted[g]
      if from == nil or (from > 0 and redis.call('ZCARD', key) > from + 1) then
        redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[a + 2])
      end
    end
    redis.call('PEXPIRE', key, ARGV[a + 1])
    wrote = true
  end
  a = a + 4 + 2 * n
end
if wrote and ARGV[5] == '2' then
  local tokens = KEYS[#KEYS]
  redis.call('ZADD', tokens, ARGV[6], token)
  redis.call('ZREMRANGEBYSCORE', tokens, '-inf', '(' .. ARGV[#ARGV - 1])
  redis.call('PEXPIRE', tokens, ARGV[#ARGV])
end
return reply_with(reply)
