-- Statistics added to an hour's hash once, however often this is sent: a client that loses the
-- reply sends the command again (redis-py's Retry), and counts added twice would stay twice.
--
-- KEYS: the hash, and a key that says these counts were added (in the hash's slot).
-- ARGV: the hash's time to live in ms, that key's; then field and count, for each field.
if not redis.call('SET', KEYS[2], 1, 'NX', 'PX', ARGV[2]) then
  return 0
end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
