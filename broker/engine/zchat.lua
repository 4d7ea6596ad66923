#!lua name=zchat
-- The cluster engine's Redis 7 Functions (docs/CLUSTER.md "Scripts").
-- Loaded by broker/engine/redis_engine.py with FUNCTION LOAD REPLACE; every
-- function runs atomically, so whichever broker calls it, one room's seqs,
-- history and bus messages come out in one order.
-- Each broker loads its own copy at start, the last one loaded wins: keep
-- signatures and replies compatible (add reply elements at the end, as
-- zc_append's third): during an upgrade, brokers of two versions share it.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Fencing: a broker may write only while its registry entry is fresh. An
-- entry once stale stays refused (heartbeat will not renew it), so a broker
-- paused past its lease never writes after the reaper took its members.
local function alive(brokers, broker, ttl)
  local beat = redis.call('ZSCORE', brokers, broker)
  if not beat then return false end
  return now_ms() - tonumber(beat) <= tonumber(ttl)
end

local FENCED = 'FENCED this broker\'s lease expired; register again'

-- The functions that write for a broker: fn refused (FENCED) unless the
-- broker (ARGV[1]) is alive in the registry KEYS[at] with the lease ARGV[2].
local function fenced(at, fn)
  return function(keys, args)
    if not alive(keys[at], args[1], args[2]) then return redis.error_reply(FENCED) end
    return fn(keys, args)
  end
end

-- Delete key (and its member in set) if it still holds mine: 1, else 0.
local function delete_if_mine(key, holder, mine, set, member)
  if holder ~= mine then return 0 end
  redis.call('DEL', key)
  redis.call('SREM', set, member)
  return 1
end

-- The room's epoch, created with seq 0 when the meta hash is missing (first
-- use, or a Redis that lost its data): a new numbering, never a silent reuse
-- of seqs. A log whose top is above meta's seq (meta regressed) also gets a
-- new epoch, with seq moved up to the log's top.
--
-- floor_epoch, floor_seq: the highest seq the calling broker has seen in this
-- room ("" and 0: none). A floor above meta's seq under the same epoch means
-- this Redis lost acknowledged writes (a failover to a replica that missed
-- them: replication is asynchronous). Then the numbering restarts, atomically,
-- before anything else is numbered: a new epoch, and seq moved up to the floor
-- so that no new line takes a seq that clients saw for a lost one. The lost
-- seqs are marked by one "hole" entry at the floor (field h: how many) so that
-- history counts them as missed.
local function ensure_epoch(meta, log, idem, new_epoch, floor_epoch, floor_seq)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    redis.call('DEL', log, idem)
    redis.call('HSET', meta, 'epoch', new_epoch, 'seq', 0)
    return new_epoch
  end
  local seq = tonumber(redis.call('HGET', meta, 'seq') or '0')
  local top = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
  if top then
    local top_seq = tonumber(string.match(top[1], '^(%d+)'))
    if top_seq > seq then
      redis.call('HSET', meta, 'epoch', new_epoch, 'seq', top_seq)
      return new_epoch
    end
  end
  floor_seq = tonumber(floor_seq or '0') or 0
  if floor_epoch == epoch and floor_seq > seq then
    -- an XADD at or below the stream's last id fails: then no hole entry
    redis.pcall('XADD', log, floor_seq .. '-0', 'h', floor_seq - seq, 'd', '')
    redis.call('HSET', meta, 'epoch', new_epoch, 'seq', floor_seq)
    return new_epoch
  end
  return epoch
end

-- The payload stored at seq under key: "" when the log no longer has it
-- (trimmed: key_memory above history_lines) or holds another key there.
local function original(log, seq, key)
  local entry = redis.call('XRANGE', log, seq .. '-0', seq .. '-0')[1]
  if not entry then return '' end
  local found = {}
  for i = 1, #entry[2], 2 do found[entry[2][i]] = entry[2][i + 1] end
  if found.k ~= key or not found.d then return '' end
  return found.d
end

-- KEYS: meta, log, keys, brokers
-- ARGV: broker, ttl_ms, new_epoch, maxlen, keymem, channel, floor_epoch, floor_seq,
-- then key, payload pairs ("" = no key).
-- Returns {epoch, {seq or -original_seq for a duplicate, ...}, {the original's
-- payload for a duplicate, "" otherwise (or when the log lost it), ...}}: the
-- broker answers a resend with the original ack. The third element is new:
-- callers that read only two keep working.
-- Bus message: "L" epoch "\n" then per new line: seq "\n" #payload "\n" payload.
local function append(keys, args)
  local meta, log, idem = keys[1], keys[2], keys[3]
  local epoch = ensure_epoch(meta, log, idem, args[3], args[7], args[8])
  local maxlen, keymem = args[4], tonumber(args[5])
  local out, bus, originals = {}, {}, {}
  local seq = nil
  for i = 9, #args, 2 do
    local key, payload = args[i], args[i + 1]
    local old = nil
    if key ~= '' then old = redis.call('ZSCORE', idem, key) end
    if old then
      out[#out + 1] = -tonumber(old)
      originals[#originals + 1] = original(log, old, key)
    else
      seq = redis.call('HINCRBY', meta, 'seq', 1)
      redis.call('XADD', log, 'MAXLEN', '~', maxlen, seq .. '-0', 'd', payload, 'k', key)
      if key ~= '' then redis.call('ZADD', idem, seq, key) end
      out[#out + 1] = seq
      originals[#originals + 1] = ''
      bus[#bus + 1] = seq .. '\n' .. #payload .. '\n' .. payload
    end
  end
  if seq then
    -- the keys of the newest keymem seqs are kept, as the embedded stores do
    redis.call('ZREMRANGEBYSCORE', idem, '-inf', '(' .. (seq - keymem + 1))
    redis.call('PUBLISH', args[6], 'L' .. epoch .. '\n' .. table.concat(bus))
  end
  return {epoch, out, originals}
end

-- KEYS: meta, log, keys
-- ARGV: new_epoch, after, before (-1: none), limit, forward (0/1), floor_epoch, floor_seq
-- Returns {epoch, seq, missed, entries}; entries as XRANGE gives them, hole
-- entries (field h) included: the caller counts their seqs as missed.
local function fetch(keys, args)
  local meta, log = keys[1], keys[2]
  local epoch = ensure_epoch(meta, log, keys[3], args[1], args[6], args[7])
  local seq = tonumber(redis.call('HGET', meta, 'seq'))
  local after, before, limit = tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  local upper = seq + 1
  if before >= 0 and before < upper then upper = before end
  if upper <= after + 1 or limit <= 0 then return {epoch, seq, 0, {}} end
  local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
  local first_seq = upper
  if first then
    first_seq = tonumber(string.match(first[1], '^(%d+)'))
    if first[2][1] == 'h' then first_seq = first_seq - tonumber(first[2][2]) + 1 end
  end
  local missed = math.max(0, math.min(first_seq, upper) - (after + 1))
  -- a hole entry above the range may stand for seqs inside it (those within
  -- the entries returned are counted by the caller)
  local above = redis.call('XRANGE', log, upper .. '-0', '+', 'COUNT', 1)[1]
  if above and above[2][1] == 'h' then
    local top = tonumber(string.match(above[1], '^(%d+)'))
    local low = math.max(top - tonumber(above[2][2]) + 1, after + 1)
    if low < upper then missed = missed + upper - low end
  end
  local entries
  if args[5] == '1' then
    entries = redis.call('XRANGE', log, '(' .. after .. '-0', '(' .. upper .. '-0', 'COUNT', limit)
  else
    entries = redis.call('XREVRANGE', log, '(' .. upper .. '-0', '(' .. after .. '-0', 'COUNT', limit)
  end
  return {epoch, seq, missed, entries}
end

-- KEYS: meta, log, keys  ARGV: new_epoch, floor_epoch, floor_seq. Returns {epoch, seq}.
local function meta(keys, args)
  local epoch = ensure_epoch(keys[1], keys[2], keys[3], args[1], args[2], args[3])
  return {epoch, tonumber(redis.call('HGET', keys[1], 'seq'))}
end

-- KEYS: brokers  ARGV: broker. 1 when registered, 0 when the id exists.
local function register(keys, args)
  return redis.call('ZADD', keys[1], 'NX', now_ms(), args[1])
end

-- KEYS: brokers  ARGV: broker, ttl_ms
local function heartbeat(keys, args)
  redis.call('ZADD', keys[1], 'XX', now_ms(), args[1])
  return 1
end

-- KEYS: brokers  ARGV: ttl_ms. Ids of the brokers whose lease expired.
local function dead(keys, args)
  return redis.call('ZRANGEBYSCORE', keys[1], '-inf', '(' .. (now_ms() - tonumber(args[1])))
end

-- KEYS: nick, brokers, broker_nicks  ARGV: broker, ttl_ms, holder, lease_ms, nick_key
local function claim_nick(keys, args)
  if redis.call('SET', keys[1], args[3], 'NX', 'PX', args[4]) then
    redis.call('SADD', keys[3], args[5])
    return 1
  end
  if redis.call('GET', keys[1]) == args[3] then
    redis.call('PEXPIRE', keys[1], args[4])
    return 1
  end
  return 0
end

-- KEYS: brokers, broker_nicks, nick...  ARGV: broker, ttl_ms, lease_ms, then
-- (nick_key, holder) pairs. A lease that lapsed (a Redis restarted without
-- data) is taken again if free. Returns the indexes (0-based) of leases lost.
local function refresh_nicks(keys, args)
  local lost = {}
  for i = 3, #keys do
    local nick_key, holder = args[2 * i - 2], args[2 * i - 1]
    local now = redis.call('GET', keys[i])
    if now == holder then
      redis.call('PEXPIRE', keys[i], args[3])
    elseif not now then
      redis.call('SET', keys[i], holder, 'PX', args[3])
      redis.call('SADD', keys[2], nick_key)
    else
      lost[#lost + 1] = i - 3
    end
  end
  return lost
end

-- KEYS: nick, broker_nicks  ARGV: holder, nick_key. Delete-if-mine.
local function release_nick(keys, args)
  return delete_if_mine(keys[1], redis.call('GET', keys[1]), args[1], keys[2], args[2])
end

-- Member values: order "\n" broker "\n" session "\n" nick; order is a
-- per-room counter, so listing sorts members in joining order.
-- KEYS: members, meta, brokers, broker_rooms
-- ARGV: broker, ttl_ms, nick_key, session, nick, room, channel, notice ("" none)
local function join(keys, args)
  local old = redis.call('HGET', keys[1], args[3])
  local prefix = '\n' .. args[1] .. '\n' .. args[4] .. '\n'
  if old and string.find(old, prefix, 1, true) then return 0 end
  local order = redis.call('HINCRBY', keys[2], 'joins', 1)
  redis.call('HSET', keys[1], args[3], order .. prefix .. args[5])
  redis.call('SADD', keys[4], args[6])
  if args[8] ~= '' then redis.call('PUBLISH', args[7], 'N' .. args[8]) end
  return 1
end

-- KEYS: members  ARGV: broker, nick_key, session, channel, notice ("" none)
local function leave(keys, args)
  local old = redis.call('HGET', keys[1], args[2])
  if not old or not string.find(old, '\n' .. args[1] .. '\n' .. args[3] .. '\n', 1, true) then
    return 0
  end
  redis.call('HDEL', keys[1], args[2])
  if args[5] ~= '' then redis.call('PUBLISH', args[4], 'N' .. args[5]) end
  return 1
end

-- KEYS: members  ARGV: dead broker. Removes and returns its members as
-- nick_key, value pairs; a second call finds none (reported once).
local function reap_room(keys, args)
  local all = redis.call('HGETALL', keys[1])
  local out = {}
  local mark = '\n' .. args[1] .. '\n'
  for i = 1, #all, 2 do
    local first = string.find(all[i + 1], '\n', 1, true)
    if first and string.sub(all[i + 1], first, first + #mark - 1) == mark then
      redis.call('HDEL', keys[1], all[i])
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
    end
  end
  return out
end

-- KEYS: brokers, inbox  ARGV: broker, ttl_ms, maxlen, payload, bell channel
local function send_private(keys, args)
  local id = redis.call('XADD', keys[2], 'MAXLEN', '~', args[3], '*', 'd', args[4])
  redis.call('PUBLISH', args[5], id)
  return id
end

-- KEYS: brokers  ARGV: broker, ttl_ms, channel, notice
local function publish(keys, args)
  return redis.call('PUBLISH', args[3], 'N' .. args[4])
end

-- Sessions, so that a client can resume on any broker (docs/PROTOCOL.md §5.3).
-- KEYS: session, brokers, broker_sessions
-- ARGV: broker, ttl_ms, session_ttl_ms, token, nick, nick_key, rooms ("\n"-joined), key
local function save_session(keys, args)
  redis.call('HSET', keys[1], 'broker', args[1], 'nick', args[5], 'nick_key', args[6],
    'rooms', args[7], 'key', args[8])
  redis.call('PEXPIRE', keys[1], args[3])
  redis.call('SADD', keys[3], args[4])
  return 1
end

-- KEYS: brokers, session...  ARGV: broker, ttl_ms, session_ttl_ms. Renews the
-- sessions this broker holds; returns the indexes (0-based) of those it lost.
local function refresh_sessions(keys, args)
  local lost = {}
  for i = 2, #keys do
    if redis.call('HGET', keys[i], 'broker') == args[1] then
      redis.call('PEXPIRE', keys[i], args[3])
    else
      lost[#lost + 1] = i - 2
    end
  end
  return lost
end

-- KEYS: session, broker_sessions  ARGV: broker, token. Delete-if-mine.
local function drop_session(keys, args)
  return delete_if_mine(keys[1], redis.call('HGET', keys[1], 'broker'), args[1], keys[2], args[2])
end

-- Move a session from old_broker to this one, with its nickname lease and
-- its room memberships (joining order kept), if it is still old_broker's.
-- KEYS: session, brokers, my_sessions, old_sessions, my_nicks, old_nicks,
--       my_rooms, nick, then one members hash per room
-- ARGV: broker, ttl_ms, old_broker, token, lease_ms, session_ttl_ms, nick_key, nick,
--       then the rooms' names
local function take_session(keys, args)
  if redis.call('HGET', keys[1], 'broker') ~= args[3] then return 0 end
  redis.call('HSET', keys[1], 'broker', args[1])
  redis.call('PEXPIRE', keys[1], args[6])
  redis.call('SREM', keys[4], args[4])
  redis.call('SADD', keys[3], args[4])
  local old_holder, new_holder = args[3] .. '/' .. args[4], args[1] .. '/' .. args[4]
  if redis.call('GET', keys[8]) == old_holder then
    redis.call('SET', keys[8], new_holder, 'PX', args[5])
    redis.call('SREM', keys[6], args[7])
    redis.call('SADD', keys[5], args[7])
  end
  local mark = '\n' .. args[3] .. '\n' .. args[4] .. '\n'
  for i = 9, #keys do
    local value = redis.call('HGET', keys[i], args[7])
    if value and string.find(value, mark, 1, true) then
      local order = string.match(value, '^(%d+)')
      redis.call('HSET', keys[i], args[7],
        order .. '\n' .. args[1] .. '\n' .. args[4] .. '\n' .. args[8])
      redis.call('SADD', keys[7], args[i])
    end
  end
  return 1
end

redis.register_function('zc_save_session', fenced(2, save_session))
redis.register_function('zc_refresh_sessions', fenced(1, refresh_sessions))
redis.register_function('zc_drop_session', drop_session)
redis.register_function('zc_take_session', fenced(2, take_session))
redis.register_function('zc_append', fenced(4, append))
redis.register_function('zc_publish', fenced(1, publish))
redis.register_function{function_name = 'zc_fetch', callback = fetch}
redis.register_function('zc_meta', meta)
redis.register_function('zc_register', register)
redis.register_function('zc_heartbeat', fenced(1, heartbeat))
redis.register_function('zc_dead', dead)
redis.register_function('zc_claim_nick', fenced(2, claim_nick))
redis.register_function('zc_refresh_nicks', fenced(1, refresh_nicks))
redis.register_function('zc_release_nick', release_nick)
redis.register_function('zc_join', fenced(3, join))
redis.register_function('zc_leave', leave)
redis.register_function('zc_reap_room', reap_room)
redis.register_function('zc_send_private', fenced(1, send_private))
