"""Who may order what, where: one policy for every entry point of the control plane.

The bot (``bot:`` section, Telegram user ids), the MCP server (``mcp:``) and
`galaxy send` (``send:``, Unix user names) each name their callers and the
limits those callers have; the rules that apply the limits live here, so an
order is judged the same way whichever door it came through:

- targets: the hosts or groups a caller may send orders to (default: all);
- executors: the executors a caller may name (default: any);
- rate: orders a minute (0: no limit);
- dangerous orders: ``bot.dangerous`` lists the hosts/groups and patterns whose
  orders need a confirmation. The bot asks for it with a button; MCP and
  `galaxy send` have nobody to ask, so they refuse such an order
  (``dangerous: refuse``, the default) unless the section says ``allow``.

Sections::

    mcp:
      identity: agent          # orders and audit events carry the user "mcp:agent" (default "mcp:mcp")
      targets: [web]           # hosts or groups (default: every machine)
      executors: [opencode]    # executors it may name; an order without one gets the first (default: any)
      rate_per_minute: 20      # 0: no limit
      dangerous: refuse        # or allow
    send:
      identity: ops            # record every order as "send:ops" instead of "unix:<login name>"
      targets: [web]           # defaults for callers not listed under users
      executors: [opencode]
      rate_per_minute: 20
      dangerous: refuse
      users:                   # per Unix user (or per identity, when set)
        alice: {targets: [web1], executors: [opencode], rate_per_minute: 5}

Every refusal is an ``order_refused`` event in the control node's trail (and
so in the central one), with the caller, the entry point and the reason.
"""

from __future__ import annotations

import getpass
import os
import pwd
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from galaxy_fleet.config import Config, DangerPolicy, McpConfig, SendConfig, UserPolicy

Resolve = Callable[[str], list[str]]

ENTRY_POINTS = ("mcp", "send")
RATE_WINDOW = 60.0


# -- the rules ---------------------------------------------------------------------
def allowed_set(targets: list[str], resolve: Resolve) -> set[str]:
    allowed: set[str] = set()
    for spec in targets:
        try:
            allowed.update(resolve(spec))
        except ValueError:
            continue  # a stale name in the config allows nothing
    return allowed


def forbidden_hosts(policy: UserPolicy | None, hosts: list[str], resolve: Resolve) -> list[str]:
    """The hosts among ``hosts`` that a caller with ``policy`` may not send orders to."""
    if policy is None or policy.targets is None:
        return []
    allowed = allowed_set(policy.targets, resolve)
    return [h for h in hosts if h not in allowed]


def visible_hosts(policy: UserPolicy | None, hosts: list[str], resolve: Resolve) -> list[str]:
    """The hosts a caller may see (machines, alerts, status): those it may order."""
    forbidden = set(forbidden_hosts(policy, hosts, resolve))
    return [h for h in hosts if h not in forbidden]


def danger(policy: DangerPolicy, hosts: list[str], payload: str, resolve: Resolve) -> str | None:
    """Why this order needs a confirmation, or None."""
    marked = allowed_set(policy.targets, resolve)
    hit = [h for h in hosts if h in marked]
    if hit:
        return f"{', '.join(hit)} {'is' if len(hit) == 1 else 'are'} marked dangerous"
    for pat in policy.patterns:
        if pat.search(payload):
            return f"the order matches the dangerous pattern {pat.pattern!r}"
    return None


class RateLimiter:
    """At most ``limit`` events per key in any 60-second window (one process's memory)."""

    def __init__(self, window: float = RATE_WINDOW):
        self.window = window
        self.hits: dict[Any, deque[float]] = {}

    def check(self, key: Any, limit: int, now: float | None = None) -> float:
        """Record an event; 0 when allowed, else the seconds until one would be."""
        if limit <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        q = self.hits.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= limit:
            return max(0.1, q[0] + self.window - now)
        q.append(now)
        return 0.0

    def prune(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in [k for k, q in self.hits.items() if not q or q[-1] <= now - self.window]:
            del self.hits[key]


def stored_rate_wait(store: Any, user: str, limit: int, now: float | None = None) -> float:
    """The rate limit kept in the control store, so short-lived callers (`galaxy send`, several MCP
    servers) share one count: 0 when ``user`` may send another order, else the seconds to wait.
    A fan-out to several machines is one order."""
    if limit <= 0:
        return 0.0
    now = time.time() if now is None else now
    rows = store._exec(
        "SELECT MIN(created) AS t FROM orders WHERE sender = ? AND created > ? GROUP BY COALESCE(batch, id) ORDER BY t",
        (user, now - RATE_WINDOW),
    ).fetchall()
    if len(rows) < limit:
        return 0.0
    return max(0.1, rows[len(rows) - limit]["t"] + RATE_WINDOW - now)


@dataclass
class EntryPolicy:
    """The ``mcp:`` or ``send:`` section: who the callers are and what they may do."""

    entry: str
    identity: str | None = None
    default: UserPolicy = field(default_factory=lambda: UserPolicy(rate_per_minute=20))
    users: dict[str, UserPolicy] = field(default_factory=dict)
    dangerous_mode: str = "refuse"
    dangerous: DangerPolicy = field(default_factory=DangerPolicy)

    @classmethod
    def from_config(cls, config: Config, entry: str) -> EntryPolicy:
        """The policy of ``mcp`` or ``send`` from the typed config (checked when it was loaded)."""
        section: McpConfig | SendConfig = config.mcp if entry == "mcp" else config.send
        return cls(
            entry,
            identity=section.identity,
            default=UserPolicy(section.targets, section.rate_per_minute, section.executors),
            users=dict(getattr(section, "users", {})),
            dangerous_mode=section.dangerous,
            dangerous=config.bot.dangerous,
        )

    def caller(self) -> Caller:
        """The caller's identity and limits. For `galaxy send`: the configured identity or the
        login name of the Unix user running it; for MCP: the configured identity."""
        if self.entry == "mcp" or self.identity:
            key = self.identity or "mcp"
            identity = f"{self.entry}:{key}"
        else:
            key = unix_user()
            identity = f"unix:{key}"
        limits = self.users.get(key, self.default)
        rate = limits.rate_per_minute if limits.rate_per_minute is not None else self.default.rate_per_minute
        return Caller(identity, self.entry, UserPolicy(limits.targets, rate, limits.executors))


def unix_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return getpass.getuser()


@dataclass
class Caller:
    identity: str  # what orders and audit events carry as the user
    entry: str  # mcp, send
    limits: UserPolicy


class Refused(Exception):
    """An order the policy does not let through; ``reason`` is a short code, str() says why."""

    def __init__(self, reason: str, message: str, wait: float = 0.0):
        super().__init__(message)
        self.reason = reason
        self.wait = wait


class Gate:
    """The way MCP and `galaxy send` place orders: every check, then Fleet.submit, each refusal audited."""

    def __init__(self, fleet: Any, policy: EntryPolicy, caller: Caller):
        self.fleet = fleet
        self.policy = policy
        self.caller = caller

    def visible(self, hosts: list[str]) -> list[str]:
        return visible_hosts(self.caller.limits, hosts, self.fleet.resolve)

    def check(self, spec: str, payload: str, executor: str | None) -> str | None:
        """Raise Refused, or return the executor the order runs with."""
        limits = self.caller.limits
        hosts = self.fleet.resolve(spec)  # TargetError: an unknown target is the caller's mistake, not a refusal
        forbidden = forbidden_hosts(limits, hosts, self.fleet.resolve)
        if forbidden:
            self._refuse(
                "target_not_allowed",
                f"{self.caller.identity} may not send orders to {', '.join(forbidden)}",
                spec,
                payload,
            )
        if limits.executors is not None:
            if executor is None and limits.executors:
                executor = limits.executors[0]
            if executor not in limits.executors:
                self._refuse(
                    "executor_not_allowed",
                    f"{self.caller.identity} may not use the executor {executor!r} "
                    f"(allowed: {', '.join(limits.executors) or 'none'})",
                    spec,
                    payload,
                )
        why = danger(self.policy.dangerous, hosts, payload, self.fleet.resolve)
        if why and self.policy.dangerous_mode != "allow":
            self._refuse(
                "dangerous",
                f"dangerous order refused: {why}; {self.caller.entry} has nobody to "
                "confirm it (send it through the bot, which asks for a confirmation)",
                spec,
                payload,
            )
        wait = stored_rate_wait(self.fleet.store, self.caller.identity, limits.rate_per_minute or 0)
        if wait:
            self._refuse(
                "rate_limited",
                f"rate limited: at most {limits.rate_per_minute} orders a minute for "
                f"{self.caller.identity}; try again in {int(wait) + 1} s",
                spec,
                payload,
                wait,
            )
        return executor

    def submit(self, spec: str, payload: str, *, executor: str | None = None, **kw: Any) -> list[Any]:
        executor = self.check(spec, payload, executor)
        return self.fleet.submit(spec, payload, sender=self.caller.identity, executor=executor, **kw)

    def _refuse(self, reason: str, message: str, spec: str, payload: str, wait: float = 0.0) -> None:
        try:
            self.fleet.audit_event(
                "order_refused",
                severity="warning",
                message=message,
                user=self.caller.identity,
                reason=reason,
                entry=self.caller.entry,
                target=spec,
                payload=payload[:200],
            )
        except Exception as exc:  # the refusal stands even when the trail cannot be written
            raise Refused(reason, f"{message} (and the refusal could not be audited: {exc})", wait) from None
        raise Refused(reason, message, wait)
