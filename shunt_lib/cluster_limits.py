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
``inflight``               hash: instance id → that instance's requests in flight
``tpm``                    sorted set: one member per charge (``instance:n:tokens``), scored by its epoch s
``day:YYYY-MM-DD``         hash: instance id → that instance's tokens of the UTC day
``usd:YYYY-MM``            hash: instance id → that instance's API-equivalent USD of the UTC month
=========================  ==========================================================================

The cluster's use is the sum over the fields of a hash: each instance writes only its own field, and
writes its whole total there (from its meter, which ``tokens.db`` seeds at start), never an increment,
so a rejoin after an outage, or a Redis restarted empty, is rebuilt by rewriting the fields, and
nothing is counted twice or reset. Charges and releases go out asynchronously (``link.later``) as a
request ends. The refusal itself (message, ``retry-after``) is :func:`~shunt_lib.client_limits.check`
over the cluster's numbers, so it reads exactly as a shunt alone says it. A token without limits costs
no Redis operation; while Redis is down each instance decides alone (its own meter, as without a
cluster). What is lost in an outage: the 60 s windows of the other instances (a minute at most), and
the in-flight count of an instance that never comes back (its field expires an hour after the token's
last admission).
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
#: limits rpm, tpm, daily_tokens, monthly_usd, max_concurrent ("" where unset), window TTL ms, inflight TTL ms.
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
local n = redis.call('ZCARD', KEYS[1])
local inflight = total(KEYS[2])
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
redis.call('PEXPIRE', KEYS[2], ARGV[11])
return {1, n, inflight, window, day, tostring(usd)}
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

    @classmethod
    def attach(cls, link: "Link", srv: "ClusterHost") -> "SharedLimits":
        """Make ``srv.meter`` ask the cluster before admitting a token with limits."""
        part = cls(link, srv)
        link.on_rejoin(part._rejoin)
        srv.meter.shared = part
        return part

    def stop(self) -> None:
        """The meter decides alone again."""
        self.meter.shared = None

    def _keys(self, token_id: str, now_s: float) -> list[str]:
        k = self.link.keys
        return [k.token(token_id, "rpm"), k.token(token_id, "inflight"), k.token(token_id, "tpm"),
                k.token(token_id, "day:" + day_key(now_s)), k.token(token_id, "usd:" + month_key(now_s))]

    def admit(self, token_id: str, limits: TokenLimits, now_s: float):
        """Check and take one request of ``token_id`` across the cluster at ``now_s``.

        :returns: None (admitted: its place and slot are taken in Redis), a
            :class:`~shunt_lib.client_limits.Refusal`, or :data:`~shunt_lib.client_meter.UNDECIDED` (Redis down: decide locally).
        """
        member = f"{self.link.instance_id}:{next(self._seq)}:{now_s!r}"
        args = [repr(now_s), repr(now_s - WINDOW_S), member, self.link.instance_id,
                *(_arg(v) for v in limits), int(WINDOW_S * 1000) + 1000, INFLIGHT_TTL_S * 1000]
        reply = self.link.run(lambda r: self._script(keys=self._keys(token_id, now_s), args=args, client=r))
        if reply is None:
            return UNDECIDED
        if int(reply[0]) == 1:
            return None
        return refusal_of(limits, use_from_reply(reply, now_s), now_s)

    def left(self, token_id: str) -> None:
        """A request admitted by the cluster ended: give its slot back (asynchronously)."""
        key = self.link.keys.token(token_id, "inflight")
        me = self.link.instance_id
        self.link.later(("leave", next(self._seq)), lambda p: p.hincrby(key, me, -1))

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
        """Rewrite this instance's fields (today's tokens, this month's USD, in flight) of every token with
        limits it has used since it started."""
        now = self.srv.clock.time()
        limited = {r.id for r in self.srv.client_tokens.records() if limits_set(r.limits)}
        usage = self.meter.usage(now)
        pipe = self.link.client.pipeline(transaction=False)
        me = self.link.instance_id
        for token_id, u in usage.items():
            if token_id not in limited:
                continue
            self._write_totals(pipe, token_id)
            pipe.hset(self.link.keys.token(token_id, "inflight"), me, u.inflight)
        pipe.execute()
