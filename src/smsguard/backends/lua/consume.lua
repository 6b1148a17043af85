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
--       KEYS indexes of unless and earn (0: none; an unless below 0: minus the place, from 1,
--       of an earlier counter alone in its group, passed over while that one counts a hit), and
--       amount (0: a log; else a sum, alone in its group, each attempt adding amount); and
--       perhaps a gate, "g<place>:<count>": checked only once the earlier counter at that place
--       counts that many (a budget's spend), else taken all the same, never full.
-- Reply: {flag, n, count..., [frees...], shadowed...}: flag is the 0-based index of the first
--        enforcing flag set, or -1 (then no count follows); a count per counter (its live hits
--        before this attempt; -1 for one passed over: its unless key holds a live mark); when
--        an enforcing counter is full, what frees each: -1 for one that is not full (or is a
--        shadow one), 0 for a fixed period or a sum, else the score of the hit whose window
--        end frees a slot; and the n 0-based indexes, over flags then counters, of the shadow
--        items that would have denied (a flag set, a counter full).
--
-- A job that issues a verification code (smsguard.codes) ends its ARGV with the code's
-- arguments: nonce, keyed hash of the code, expiry (seconds), time to keep the code's key (ms),
-- wrong checks it takes, 1 if only an exempting flag issues it, and the word 'code'; its key is
-- the last of KEYS, and an exempting flag's shadow argument is 'e'. When the attempt is allowed
-- the number's live code is read, or a new one written; the reply then holds, before the
-- shadowed indexes, {status ('new', 'live' or ''), nonce, wrong checks left, issued at}.
--
-- A check of a code (ARGV[1] is 'check') is another job altogether: see check() below.
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
-- One check of a verification code, all in one call. KEYS: the code's hash (but with charge),
-- the limits on wrong checks, then the keys a right code marks (a verification). ARGV: 'check',
-- now, token, the guess's keyed hash ('' for a malformed guess), charge (1: the limits alone,
-- their hits taken at once: a Cluster's first step; 2: only read the code), number of limits, then per limit: its
-- limit, the score from which it counts (exclusive), its time to live in ms; then the marks'
-- member and per mark: its expiry, time to live in ms and its own member ('' for the marks').
-- Reply: {status, left, issued at, count..., [frees...]}: status 'ok', 'wrong_code',
-- 'code_expired', 'no_code', 'check_attempts', or '' when a limit is full (nothing compared,
-- nothing taken; frees then says, per limit, -1 or the score of the hit whose end frees it).
-- ARGV arrives as one argument, its fields a line each (smsguard.backends.wire._packed): one
-- argument costs the client one step to pack, where two dozen cost two dozen.
local packed, nfields = ARGV[1] .. '\n', 0
local ARGV = {}
for field in string.gmatch(packed, '([^\n]*)\n') do
  nfields = nfields + 1
  ARGV[nfields] = field
end

local function check()
  local now, token, hashed, charge, nlimits = ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1', tonumber(ARGV[6])
  local peek = ARGV[5] == '2' -- only read the code (Guard.status)
  local first = charge and 1 or 2 -- KEYS index of the first limit
  local reply, full = {'', -1, '0'}, false
  for i = 0, nlimits - 1 do
    local key, limit, from = KEYS[first + i], tonumber(ARGV[7 + 3 * i]), ARGV[8 + 3 * i]
    local count = redis.call('ZCOUNT', key, '(' .. from, '+inf')
    reply[4 + i] = count
    if count >= limit then
      full = true
      reply[4 + nlimits + i] = redis.call('ZRANGEBYSCORE', key, '(' .. from, '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)[2]
    else
      reply[4 + nlimits + i] = -1
    end
  end
  if full then
    return reply
  end
  for i = 4 + nlimits, 3 + 2 * nlimits do
    reply[i] = nil
  end
  local status = ''
  if not charge then
    local code = redis.call('HMGET', KEYS[1], 'h', 'e', 'l', 's', 't')
    local left = tonumber(code[3])
    if not code[1] then
      status = 'no_code'
    elseif code[4] then -- spent: told no code, but to the very check that spent it, sent again
      status = code[4] == token and 'ok' or 'no_code'
    elseif tonumber(code[2]) <= tonumber(now) then
      status = 'code_expired'
    elseif left <= 0 then
      status = 'check_attempts'
    elseif peek then
      status = 'live'
    elseif hashed ~= '' and hashed == code[1] then
      status = 'ok'
      redis.call('HSET', KEYS[1], 's', token)
      local m = 7 + 3 * nlimits -- the marks of a verification, as a Record writes them
      for k = first + nlimits, #KEYS do
        redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
        local i = m + 3 * (k - first - nlimits)
        redis.call('ZADD', KEYS[k], ARGV[i + 1], ARGV[i + 3] ~= '' and ARGV[i + 3] or ARGV[m])
        redis.call('PEXPIRE', KEYS[k], ARGV[i + 2])
      end
    else
      status = 'wrong_code'
      left = redis.call('HINCRBY', KEYS[1], 'l', -1)
    end
    reply[1], reply[2], reply[3] = status, left or -1, code[5] or '0'
  end
  if status ~= 'ok' and not peek then -- a wrong check: one hit of each limit
    for i = 0, nlimits - 1 do
      local key = KEYS[first + i]
      redis.call('ZADD', key, now, token)
      redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[8 + 3 * i])
      redis.call('PEXPIRE', key, ARGV[9 + 3 * i])
    end
  end
  return reply
end

if ARGV[1] == 'check' then
  return check()
end

local nflags = tonumber(ARGV[3])
local ngroups = tonumber(ARGV[4])
local token = ARGV[2]
local shadowed = {}
local coded = ARGV[#ARGV] == 'code' -- a code to issue with an allowed attempt
local last = coded and #ARGV - 7 or #ARGV -- the last argument before the code's
local issued = coded and {'', '', -1, '0'} or {}
local function reply_with(reply)
  reply[2] = #shadowed
  for _, item in ipairs(issued) do
    reply[#reply + 1] = item
  end
  for _, i in ipairs(shadowed) do
    reply[#reply + 1] = i
  end
  return reply
end

-- The number's live code (neither spent, dead nor expired), else a new one.
local function issue()
  local key, c = KEYS[#KEYS], #ARGV - 6
  local live = redis.call('HMGET', key, 'n', 'e', 's', 'l', 't')
  if live[1] and tonumber(live[2]) > tonumber(ARGV[1]) and not live[3] and tonumber(live[4]) > 0 then
    return {'live', live[1], tonumber(live[4]), live[5]}
  end
  redis.call('DEL', key)
  redis.call('HSET', key, 'n', ARGV[c], 'h', ARGV[c + 1], 'e', ARGV[c + 2], 'l', ARGV[c + 4], 't', ARGV[1])
  redis.call('PEXPIRE', key, ARGV[c + 3])
  return {'new', ARGV[c], tonumber(ARGV[c + 4]), ARGV[1]}
end

local counted = {} -- per log: its hits from its least bound (nil: not counted)
local again = false -- a re-run of an admitted decision
if ARGV[5] == '1' then -- hits from the first log's least bound, this attempt's among them if any
  local first = 7 + nflags
  counted[1] = redis.call('ZCOUNT', KEYS[nflags + 1], ARGV[first + 2], '+inf')
  again = counted[1] > 0 and redis.call('ZSCORE', KEYS[nflags + 1], ARGV[first + 3] .. token) ~= false
elseif ARGV[5] == '2' then
  again = redis.call('ZSCORE', KEYS[coded and #KEYS - 1 or #KEYS], token) ~= false
end

if nflags > 0 then
  local set = redis.call('MGET', unpack(KEYS, 1, nflags))
  for i = 1, nflags do
    if set[i] then
      if ARGV[6 + i] ~= '1' then
        if not again then -- (a re-run passes: its first run found the flag unset)
          if coded and ARGV[6 + i] == 'e' then -- an exemption: the code goes with it
            issued = issue()
          end
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
    local limit, tag, amount, gated = tonumber(spec), nil, nil, false
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
      local u = tonumber(unless) -- below 0: the place of an earlier counter, whose count is read
      if u < 0 and reply[2 - u] > 0 or u > 0 and redis.call('ZCOUNT', KEYS[u], '(' .. ARGV[1], '+inf') > 0 then
        limit = nil -- passed over: a verified number, say
      elseif earn ~= '0' then
        local earned = redis.call('ZCOUNT', KEYS[tonumber(earn)], '(' .. ARGV[1], '+inf')
        limit = (limit < 0 and -1 or 1) * (math.abs(limit) + math.floor(tonumber(per) * earned))
      end
      tags[j] = tag
      local place, level = string.match(spec, ' g(%d+):(%d+)$') -- checked from an earlier count on
      if limit and place and reply[2 + tonumber(place)] < tonumber(level) then
        gated = true
      end
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
    if over and not gated then
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
if coded and ARGV[#ARGV - 1] ~= '1' then -- allowed (a fixed denial follows unset flags)
  issued = issue()
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
  local tokens = KEYS[coded and #KEYS - 1 or #KEYS]
  redis.call('ZADD', tokens, ARGV[6], token)
  redis.call('ZREMRANGEBYSCORE', tokens, '-inf', '(' .. ARGV[last - 1])
  redis.call('PEXPIRE', tokens, ARGV[last])
end
return reply_with(reply)
