"""Client tokens' limits held across the shunts of a cluster: one check-and-take in Redis per request
of a token that has limits.

A token's counters carry its id in a hash tag (``N:{token:ID}:...``, one Redis Cluster slot), so one
Lua script (:data:`ADMIT`, atomic: Redis runs a script alone, https://redis.io/docs/latest/develop/interactive/programmability/eval-intro/)
reads them all, decides as :func:`shunt_lib.client_limits.check` does, and on admission takes the
request's place before any other instance's request is looked at; no number of racing requests over
any number of instances gets more admitted than a limit allows. One round trip, synchronous.

=========================  ==========================================================================
key (``N:{token:ID}:``)    holds
=========================  ==========================================================================
``rpm``                    sorted set: one member per admission (``instance:n``), scored by its epoch s
``inflight``               hash: instance id → that instance's requests in flight; ``ID#gen`` → the
                           number of its last admission counted there (orders its writes)
``tpm``                    sorted set: one member per charge (``instance:n:tokens``), scored by its epoch s
``day:YYYY-MM-DD``         hash: instance id → that instance's tokens of the UTC day
``usd:YYYY-MM``            hash: instance id → that instance's API-equivalent USD of the UTC month
=========================  ==========================================================================

The cluster's use is the sum over the fields of a hash: each instance writes only its own field, and
writes its whole total there (from its meter, which ``tokens.db`` seeds at start), never an increment,
so a rejoin after an outage, or a Redis restarted empty, is rebuilt by rewriting the fields, and
nothing is counted twice or reset. Charges and releases go out asynchronously (``link.later``) as a
request ends.

In flight: the admission script adds the admitted request to this instance's field (so racing
instances see it at once); after every admission and release, however decided (also while Redis was
down), this instance's whole count in flight is written over its field, coalesced (:data:`SET_INFLIGHT`).
A write carries the number (``gen``) of the last admission the count includes and is ignored if a later
admission already reached Redis, so no admission is ever written away. A rejoin writes every token with
limits (0 where nothing is in flight here: a restarted instance frees what it held before), and the
script ignores and deletes the fields of instances whose heartbeat is stale (:attr:`Link.stale_instances
<shunt_lib.cluster_link.Link.stale_instances>`: crashed or cut off; one that comes back rewrites its
field when it rejoins). A clean stop deletes this instance's fields. The refusal itself (message, ``retry-after``) is :func:`~shunt_lib.client_limits.check`
over the cluster's numbers, so it reads exactly as a shunt alone says it. A token without limits costs
no Redis operation; while Redis is down each instance decides alone (its own meter, as without a
cluster). What is lost in an outage: the 60 s windows of the other instances (a minute at most).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from .client_limits import Refusal, Use, WINDOW_S, check, day_key, limits_set, month_key
from .client_meter import UNDECIDED
from .clients import TokenLimits

if TYPE_CHECKING:
    from .cluster_link import Link
    from .serving import ClusterHost

DAY_TTL_S = 2 * 86400
MONTH_TTL_S = 33 * 86400
INFLIGHT_TTL_S = 3600

#: KEYS: rpm, inflight, tpm, day, usd. ARGV: now_s, since_s, admission member, instance id, then the
#: limits rpm, tpm, daily_tokens, monthly_usd, max_concurrent ("" where unset), window TTL ms, inflight TTL ms,
#: the admission's number (gen), then the ids of stale instances (their in-flight fields are deleted).
#: Returns {admitted 0|1, admissions in the window, in flight, tokens in the window, tokens today, USD this
#: month (text), and, when refused, the admissions' times and the charges (member, time) of the window}.
ADMIT = """
local now, since = tonumber(ARGV[1]), ARGV[2]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', since)
local function total(key)
  local sum = 0
  for _, v in ipairs(redis.call('HVALS', key)) do
    local n = tonumber(v) or 0
    if n > 0 then sum = sum + n end
  end
  return sum
end
local stale = {}
for i = 13, #ARGV do stale[ARGV[i]] = true end
local n = redis.call('ZCARD', KEYS[1])
local inflight = 0
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  local name = fields[i]
  if string.sub(name, -4) ~= '#gen' then
    if stale[name] then
      redis.call('HDEL', KEYS[2], name, name .. '#gen')
    else
      local v = tonumber(fields[i + 1]) or 0
      if v > 0 then inflight = inflight + v end
    end
  end
end
local charges = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
local window = 0
for i = 1, #charges, 2 do
  window = window + (tonumber(string.match(charges[i], ':(%d+)$')) or 0)
end
local day, usd = total(KEYS[4]), total(KEYS[5])
local function over(i, used)
  return ARGV[i] ~= '' and used >= tonumber(ARGV[i])
end
local refused = over(5, n) or over(6, window) or over(7, day) or over(8, usd) or over(9, inflight)
if refused then
  return {0, n, inflight, window, day, tostring(usd), redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'), charges}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[10])
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
if tonumber(redis.call('HGET', KEYS[2], ARGV[4] .. '#gen') or '0') < tonumber(ARGV[12]) then
  redis.call('HSET', KEYS[2], ARGV[4] .. '#gen', ARGV[12])
end
redis.call('PEXPIRE', KEYS[2], ARGV[11])
return {1, n, inflight, window, day, tostring(usd)}
"""

#: KEYS: inflight. ARGV: instance id, its count in flight, the number (gen) of the last admission it
#: includes, inflight TTL ms, and "force" to write whatever the field's number. Returns 1 if written.
SET_INFLIGHT = """
if ARGV[5] ~= 'force' and tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. '#gen') or '0') > tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. '#gen', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


def _arg(value) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def use_from_reply(reply: list, now_s: float) -> Use:
    """The cluster's :class:`~shunt_lib.client_limits.Use` at ``now_s`` from :data:`ADMIT`'s reply (a
    refusal's, with the windows' entries). An entry stamped after ``now_s`` (another instance's clock, or
    a request that raced this one) counts as made at ``now_s``: a retry is never asked for past the window."""
    admissions = sorted(min(float(s), now_s) for s in reply[6][1::2]) if len(reply) > 6 else []
    charges = []
    if len(reply) > 7:
        flat = reply[7]
        for member, score in zip(flat[0::2], flat[1::2]):
            text = member.decode() if isinstance(member, bytes) else str(member)
            charges.append((min(float(score), now_s), int(text.rsplit(":", 1)[1])))
        charges.sort()
    usd = reply[5].decode() if isinstance(reply[5], bytes) else str(reply[5])
    return Use(admissions, charges, int(reply[3]), int(reply[2]), int(reply[4]), float(usd))


def inflight_counts(fields: dict) -> dict[str, int]:
    """Each instance's count in flight from an ``inflight`` hash as ``HGETALL`` returns it (bytes or
    text), without the ``#gen`` fields: ``{instance id: count}``."""
    out = {}
    for name, value in fields.items():
        name = name.decode() if isinstance(name, bytes) else str(name)
        if not name.endswith("#gen"):
            out[name] = int(value)
    return out


def refusal_of(limits: TokenLimits, use: Use, now_s: float) -> Refusal:
    """The refusal the script decided on, worded by :func:`~shunt_lib.client_limits.check` (the same
    comparisons: it always finds one; a 1 s retry on the rpm limit if it did not)."""
    return check(limits, use, now_s) or Refusal("rpm", f"over its {limits.rpm or 0:,} requests per minute", 1)


class SharedLimits:
    """This instance's part in holding client tokens' limits across the cluster; installed as the
    meter's ``shared`` (:class:`~shunt_lib.client_meter.ClientMeter`). Any thread may call any method."""

    def __init__(self, link: "Link", srv: "ClusterHost"):
        self.link = link
        self.srv = srv
        self.meter = srv.meter
        self._seq = itertools.count()
        self._script = link.client.register_script(ADMIT)
        self._set_inflight = link.client.register_script(SET_INFLIGHT)

    @classmethod
    def attach(cls, link: "Link", srv: "ClusterHost") -> "SharedLimits":
        """Make ``srv.meter`` ask the cluster before admitting a token with limits."""
        part = cls(link, srv)
        link.on_rejoin(part._rejoin)
        srv.meter.shared = part
        return part

    def stop(self) -> None:
        """The meter decides alone again; this instance's in-flight fields are deleted (sent with the
        link's last writes)."""
        self.meter.shared = None
        me = self.link.instance_id
        limited = {r.id for r in self.srv.client_tokens.records() if limits_set(r.limits)}
        for token_id in limited & set(self.meter.usage()):
            key = self.link.keys.token(token_id, "inflight")
            self.link.later(("inflight", token_id), lambda p, key=key: p.hdel(key, me, me + "#gen"))

    def _keys(self, token_id: str, now_s: float) -> list[str]:
        k = self.link.keys
        return [k.token(token_id, "rpm"), k.token(token_id, "inflight"), k.token(token_id, "tpm"),
                k.token(token_id, "day:" + day_key(now_s)), k.token(token_id, "usd:" + month_key(now_s))]

    def admit(self, token_id: str, limits: TokenLimits, now_s: float, gen: int = 0):
        """Check and take one request of ``token_id`` across the cluster at ``now_s``; ``gen``: the
        admission's number in this instance's meter (:meth:`~shunt_lib.client_meter.ClientMeter.inflight_of`).

        :returns: None (admitted: its place and slot are taken in Redis), a
            :class:`~shunt_lib.client_limits.Refusal`, or :data:`~shunt_lib.client_meter.UNDECIDED` (Redis down: decide locally).
        """
        member = f"{self.link.instance_id}:{next(self._seq)}:{now_s!r}"
        args = [repr(now_s), repr(now_s - WINDOW_S), member, self.link.instance_id,
                *(_arg(v) for v in limits), int(WINDOW_S * 1000) + 1000, INFLIGHT_TTL_S * 1000, gen,
                *sorted(self.link.stale_instances)]
        reply = self.link.run(lambda r: self._script(keys=self._keys(token_id, now_s), args=args, client=r))
        if reply is None:
            return UNDECIDED
        if int(reply[0]) == 1:
            return None
        return refusal_of(limits, use_from_reply(reply, now_s), now_s)

    def inflight_changed(self, token_id: str) -> None:
        """This instance admitted or ended a request of ``token_id`` (a token with limits): rewrite its
        in-flight field with its count as it is when the write goes out (asynchronously, coalesced)."""
        self.link.later(("inflight", token_id), lambda p: self._write_inflight(p, token_id))

    def _write_inflight(self, pipe, token_id: str, force: bool = False) -> None:
        """Queue on ``pipe`` the write of this instance's count in flight of ``token_id``; none while an
        admission of it waits on the cluster (its end queues the write again), unless ``force``."""
        inflight, asking, gen = self.meter.inflight_of(token_id)
        if asking and not force:
            return
        key = self.link.keys.token(token_id, "inflight")
        self._set_inflight(keys=[key], args=[self.link.instance_id, inflight, gen, INFLIGHT_TTL_S * 1000,
                                             "force" if force else ""], client=pipe)

    def charged(self, token_id: str, tokens: int, now_s: float) -> None:
        """A request of ``token_id`` was charged ``tokens`` at ``now_s``: add them to the cluster's minute,
        and rewrite this instance's totals of the day and month (asynchronously)."""
        k, me = self.link.keys, self.link.instance_id
        if tokens:
            member = f"{me}:{next(self._seq)}:{tokens}"
            tpm = k.token(token_id, "tpm")
            self.link.later(("tpm", next(self._seq)), lambda p: (p.zadd(tpm, {member: now_s}),
                                                                  p.pexpire(tpm, int(WINDOW_S * 1000) + 1000)))
        self.link.later(("budget", token_id), lambda p: self._write_totals(p, token_id))

    def _write_totals(self, pipe, token_id: str) -> None:
        """Rewrite this instance's field of today's tokens and this month's USD (read from the meter when
        the write goes out, so the newest total is sent whatever order the charges were queued in)."""
        now = self.meter.clock()
        used = self.meter.used(token_id, now)
        if not used:
            return
        k, me, day = self.link.keys, self.link.instance_id, day_key(now)
        day_k, usd_k = k.token(token_id, "day:" + day), k.token(token_id, "usd:" + day[:7])
        pipe.hset(day_k, me, int(used["daily_tokens"]))
        pipe.expire(day_k, DAY_TTL_S)
        pipe.hset(usd_k, me, repr(float(used["monthly_usd"])))
        pipe.expire(usd_k, MONTH_TTL_S)

    def _rejoin(self) -> None:
        """Rewrite this instance's fields of every token with limits: today's tokens and this month's USD
        of those it has used since it started, and its count in flight (0 for those it has none of: what
        this instance held before a crash and a restart, or before an outage, is freed)."""
        now = self.srv.clock.time()
        limited = {r.id for r in self.srv.client_tokens.records() if limits_set(r.limits)}
        used = self.meter.usage(now)
        pipe = self.link.client.pipeline(transaction=False)
        for token_id in sorted(limited):
            if token_id in used:
                self._write_totals(pipe, token_id)
            self._write_inflight(pipe, token_id, force=True)
        pipe.execute()
