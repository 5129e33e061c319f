"""The Lua scripts behind every REPL state change (each runs atomically on the server).

Key names are never spelled here: the store passes them in, and where a script must reach
REPL records by id it gets the ``replMeta:`` prefix as an argument. (Scripts that read keys
they were not given are fine on one Redis server, which is what Devex uses; a Redis
Cluster would need hash tags.)
"""

from __future__ import annotations

# How many of a user's REPLs are, or are about to be, running: starting, running, or being
# created with a start to follow. ``skip`` is the REPL being changed.
_ACTIVE = """
local function active(user_key, prefix, skip)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGE', user_key, 0, -1)) do
    if id ~= skip then
      local st = redis.call('HMGET', prefix .. id, 'status', 'desired')
      if st[1] == 'starting' or st[1] == 'running'
         or (st[1] == 'creating' and st[2] == 'running') then
        n = n + 1
      end
    end
  end
  return n
end
"""

# Why a new REPL may not be recorded (nil: it may). KEYS and ARGV as for CREATE.
_CREATE_REFUSAL = """
local function refusal()
  if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 'name_taken' end
  if tonumber(ARGV[3]) >= 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
    return 'quota'
  end
  if tonumber(ARGV[5]) >= 0 and active(KEYS[2], ARGV[6], ARGV[2]) >= tonumber(ARGV[5]) then
    return 'running_quota'
  end
  if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
  return nil
end
"""

# The checks of CREATE alone, writing nothing: run under WATCH before the transaction that
# records the REPL together with its job (so a refused create enqueues nothing).
CREATE_CHECK = _ACTIVE + _CREATE_REFUSAL + """
return refusal() or 'ok'
"""

# KEYS: meta, userRepls, names, allRepls.
# ARGV: lname, id, quota, score, max_active (-1: no check), meta prefix, then field pairs.
CREATE = _ACTIVE + _CREATE_REFUSAL + """
local why = refusal()
if why then return why end
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
return 'ok'
"""

# KEYS: meta, activeSession, runningIndex, userRepls.
# ARGV: 1 target status ('' = keep), 2 allowed sources ('*' = any, else space separated;
#       '' = none), 3 session mode (keep|set|del), 4 epoch, 5 field count n,
#       6 max_active (-1: no check), 7 meta prefix, 8 guard field ('' = none), 9 the value
#       that field must have, then n field pairs, then session pairs.
TRANSITION = _ACTIVE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if ARGV[2] ~= '*' then
  local ok = false
  for s in string.gmatch(ARGV[2], '%S+') do if s == status then ok = true end end
  if not ok then return {'refused', status} end
end
if ARGV[8] ~= '' and redis.call('HGET', KEYS[1], ARGV[8]) ~= ARGV[9] then
  return {'refused', status}
end
local id = redis.call('HGET', KEYS[1], 'id')
if tonumber(ARGV[6]) >= 0 and active(KEYS[4], ARGV[7], id) >= tonumber(ARGV[6]) then
  return {'running_quota', status}
end
local n = tonumber(ARGV[5])
for i = 10, 9 + 2 * n, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[1])
  if ARGV[1] == 'running' then
    redis.call('ZADD', KEYS[3], ARGV[4], id)
  elseif ARGV[1] ~= 'stopping' and ARGV[1] ~= 'failed' then
    redis.call('ZREM', KEYS[3], id)
  end
end
if ARGV[3] == 'del' then
  redis.call('DEL', KEYS[2])
elseif ARGV[3] == 'set' then
  for i = 10 + 2 * n, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
return {'ok', status}
"""

# KEYS: a sorted set of REPL ids (userRepls or allRepls).  ARGV: meta prefix.
# Every REPL hash of the set, newest first, in one round trip.
LIST = """
local ids = redis.call('ZREVRANGE', KEYS[1], 0, -1)
local out = {}
for i, id in ipairs(ids) do out[i] = redis.call('HGETALL', ARGV[1] .. id) end
return out
"""

# One page of a sorted index, newest first, after a cursor (the last page's last score and
# id; ties in score go by id, as ZREVRANGEBYSCORE orders them), plus the index's size.
# KEYS: index.  ARGV: meta prefix, cursor score ('' for the first page), cursor id, limit.
# Returns {total, {id, score, HGETALL}...} with up to limit + 1 rows (one more: is there more?).
PAGE = """
local limit = tonumber(ARGV[4])
local ids = {}
if ARGV[2] == '' then
  ids = redis.call('ZREVRANGE', KEYS[1], 0, limit)
else
  for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[2])) do
    if id < ARGV[3] then table.insert(ids, id) end
  end
  local rest = redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '-inf',
                         'LIMIT', 0, limit + 1)
  for _, id in ipairs(rest) do table.insert(ids, id) end
end
local rows = {}
for i = 1, math.min(#ids, limit + 1) do
  local id = ids[i]
  rows[i] = {id, redis.call('ZSCORE', KEYS[1], id), redis.call('HGETALL', ARGV[1] .. id)}
end
return {redis.call('ZCARD', KEYS[1]), rows}
"""

# KEYS: meta, userRepls, names, allRepls, runningIndex, session, events.  ARGV: id.
DELETE = """
local owner = redis.call('HGET', KEYS[1], 'owner_id')
if not owner then return 0 end
local name = redis.call('HGET', KEYS[1], 'name')
if name and redis.call('HGET', KEYS[3], string.lower(name)) == ARGV[1] then
  redis.call('HDEL', KEYS[3], string.lower(name))
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[6], KEYS[7])
return 1
"""

# KEYS: meta, runningIndex.  ARGV: now (ISO), epoch.  Only a running REPL records activity:
# a late heartbeat must not resurrect a deleted REPL as a half-empty record.
TOUCH = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'last_activity_at', ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', ARGV[2], redis.call('HGET', KEYS[1], 'id'))
return 1
"""

# KEYS: meta, events.  ARGV: event JSON, how many to keep.  Events of existing REPLs only.
ADD_EVENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
return 1
"""

# The REPL lock (devex/infra/lease.py). KEYS: the lock. ARGV: the holder's value.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# ARGV: the holder's value, the lease in milliseconds. 0: it is not ours any more.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# ARGV: the value of the dead holder seen, ours, the lease in milliseconds. 0: the lock
# changed hands meanwhile (someone else was quicker), nothing written.
TAKE_OVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS[1]: a credential (a session string, or a token hash: ARGV[1] says which); then the
# user's hash and any REPL hashes. One command: an authenticated read's only round trip.
READ_WITH_USER = """
local out = {}
if ARGV[1] == 'hash' then
  out[1] = redis.call('HGETALL', KEYS[1])
else
  out[1] = redis.call('GET', KEYS[1])
end
for i = 2, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
"""
