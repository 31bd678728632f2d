"""Every text the bot shows, as Telegram HTML: answers split to fit, status messages, fleet views,
replies to commands, alerts.

Pure functions, no Telegram or fleet objects: they take OrderRecord-like
objects (``id host state payload created started finished progress error
answer response details target_spec``) and plain dicts, and return text.

The answer is the record's ``answer`` field, as the node's worker wrote it:
never re-parsed out of the Markdown document (``response``), which only goes
out whole, as the attachment of a long answer. Answers are Markdown (an
agent's reply, or a command's output wrapped in a fence). Telegram's own
Markdown dialects reject much of what agents write, so the bot sends HTML:
``md_to_html`` converts the safe subset (fenced and inline code, bold,
headings, bullets, http links) and escapes everything else.
Telegram counts a message's length in UTF-16 code units after parsing; the
splitter measures the HTML itself, which is never shorter.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from galaxy_fleet.node_status import DEGRADED, DOWN, HEALTHY, UNKNOWN
from galaxy_fleet.order import (
    CANCELLED,
    DELIVERED,
    DONE,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RECEIVED,
    RUNNING,
    TIMED_OUT,
    is_terminal,
)

TELEGRAM_LIMIT = 4096
CAPTION_LIMIT = 1024
PREVIEW_CHARS = 120

ICONS = {
    RECEIVED: "📨",
    QUEUED: "⏳",
    DELIVERED: "📬",
    RUNNING: "🏃",
    DONE: "✅",
    FAILED: "❌",
    CANCELLED: "🚫",
    TIMED_OUT: "⌛",
    INTERRUPTED: "⚠️",
}
LABELS = {TIMED_OUT: "timed out"}


def tg_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def esc(text: Any) -> str:
    return html.escape(str(text), quote=False)


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "never"
    delta = (now or time.time()) - ts
    if delta < 60:
        return f"{int(max(delta, 0))}s ago"
    if delta < 3600:
        return f"{int(delta // 60)}m ago"
    if delta < 86400:
        return f"{int(delta // 3600)}h ago"
    return f"{int(delta // 86400)}d ago"


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def state_label(state: str) -> str:
    return LABELS.get(state, state)


def elapsed(rec: Any, now: float | None = None) -> float | None:
    now = now or time.time()
    if is_terminal(rec.state):
        run_s = ((rec.details or {}).get("timings") or {}).get("run_s")
        if isinstance(run_s, (int, float)):
            return float(run_s)  # measured on the node
        end = rec.finished or rec.updated
        return end - (rec.started or rec.created) if end else None
    if rec.state == RUNNING and rec.started:
        return now - rec.started
    return now - rec.created if rec.created else None


# -- Markdown to Telegram HTML ------------------------------------------------
_FENCE = re.compile(r"^\s*```\s*([\w+#.-]*)\s*$")
_INLINE = re.compile(r"`([^`\n]+)`|\*\*(?=\S)(.+?)(?<=\S)\*\*|\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+")


def _inline(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(esc(text[pos : m.start()]))
        if m.group(1) is not None:
            out.append(f"<code>{esc(m.group(1))}</code>")
        elif m.group(2) is not None:
            out.append(f"<b>{_inline(m.group(2))}</b>")
        else:
            out.append(f'<a href="{html.escape(m.group(4), quote=True)}">{esc(m.group(3))}</a>')
        pos = m.end()
    out.append(esc(text[pos:]))
    return "".join(out)


def _line(line: str) -> str:
    m = _HEADING.match(line)
    if m:
        return f"<b>{_inline(m.group(1))}</b>"
    m = _BULLET.match(line)
    if m:
        return f"{m.group(1)}• {_inline(line[m.end() :])}"
    return _inline(line)


def _pre(lines: list[str], lang: str) -> str:
    body = esc("\n".join(lines))
    if lang:
        return f'<pre><code class="language-{esc(lang)}">{body}</code></pre>'
    return f"<pre>{body}</pre>"


def md_to_html(md: str) -> str:
    out: list[str] = []
    code: list[str] | None = None
    lang = ""
    for line in md.split("\n"):
        if code is not None:
            if line.strip().startswith("```"):
                out.append(_pre(code, lang))
                code = None
            else:
                code.append(line)
            continue
        m = _FENCE.match(line)
        if m:
            code, lang = [], m.group(1)
            continue
        out.append(_line(line))
    if code is not None:  # an unclosed fence runs to the end, as in most renderers
        out.append(_pre(code, lang))
    return "\n".join(out)


def html_to_text(text: str) -> str:
    """Plain text from our own HTML (the fallback if Telegram rejects the markup)."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))


# -- splitting ------------------------------------------------------------------
def _blocks(md: str) -> list[str]:
    """Paragraphs and fenced code blocks, in order (blank lines separate paragraphs)."""
    blocks: list[str] = []
    para: list[str] = []
    code: list[str] | None = None
    for line in md.split("\n"):
        if code is not None:
            code.append(line)
            if line.strip().startswith("```"):
                blocks.append("\n".join(code))
                code = None
            continue
        if _FENCE.match(line):
            if para:
                blocks.append("\n".join(para))
                para = []
            code = [line]
            continue
        if line.strip():
            para.append(line)
        elif para:
            blocks.append("\n".join(para))
            para = []
    if code is not None:
        code.append("```")
        blocks.append("\n".join(code))
    if para:
        blocks.append("\n".join(para))
    return blocks


def _fits(md: str, limit: int) -> bool:
    return tg_len(md_to_html(md)) <= limit


def _cut_text(text: str, limit: int) -> list[str]:
    """Split one long line at spaces where possible."""
    pieces: list[str] = []
    while text:
        n = min(len(text), max(1, limit))
        while n > 1 and not _fits(text[:n], limit):
            n = n * 3 // 4
        cut = text.rfind(" ", n // 2, n) if n < len(text) else n
        cut = cut if cut > 0 else n
        pieces.append(text[:cut])
        text = text[cut:].lstrip(" ")
    return pieces


def _atoms(block: str, limit: int, first_limit: int | None = None) -> list[str]:
    """Pieces of one block, each rendering within ``limit`` (the first within ``first_limit``:
    what is left of the message it starts in)."""
    first = limit if first_limit is None else first_limit
    if _fits(block, first):
        return [block]
    lines = block.split("\n")
    atoms: list[str] = []
    chunk: list[str] = []

    def budget() -> int:
        return first if not atoms else limit

    if _FENCE.match(lines[0]):
        opener, body = lines[0].strip(), lines[1:-1]
        overhead = tg_len(md_to_html(opener + "\n\n```"))
        for line in body:
            pieces = [line] if _fits(opener + "\n" + line + "\n```", limit) else _cut_text(line, limit - overhead)
            for piece in pieces:
                if not _fits("\n".join([opener, *chunk, piece, "```"]), budget()):
                    if chunk:
                        atoms.append("\n".join([opener, *chunk, "```"]))
                        chunk = []
                    elif not atoms:
                        atoms.append("")  # not even one line fits in the rest of the message
                chunk.append(piece)
        if chunk:
            atoms.append("\n".join([opener, *chunk, "```"]))
        return atoms
    for line in lines:
        for piece in [line] if _fits(line, limit) else _cut_text(line, limit):
            if not _fits("\n".join([*chunk, piece]), budget()):
                if chunk:
                    atoms.append("\n".join(chunk))
                    chunk = []
                elif not atoms:
                    atoms.append("")
            chunk.append(piece)
    if chunk:
        atoms.append("\n".join(chunk))
    return atoms


def split_markdown(md: str, *, limit: int = TELEGRAM_LIMIT, max_parts: int | None = None) -> list[str] | None:
    """``md`` as HTML messages of at most ``limit``, split between paragraphs and code blocks.

    A block too long for one message is split between lines (a code block is
    closed and reopened with its language), its first piece filling the
    message it starts in. Returns None when more than ``max_parts`` messages
    would be needed: send a document instead.
    """
    parts: list[str] = []
    current = ""
    for block in _blocks(md):
        left = limit - tg_len(md_to_html(current)) - 2 if current else limit
        for atom in _atoms(block, limit, left):
            if not atom:  # nothing of the block fits in the rest of this message
                parts.append(current)
                current = ""
                continue
            candidate = f"{current}\n\n{atom}" if current else atom
            if current and not _fits(candidate, limit):
                parts.append(current)
                candidate = atom
            current = candidate
            if max_parts is not None and len(parts) >= max_parts:
                return None
    if current or not parts:
        parts.append(current)
    if max_parts is not None and len(parts) > max_parts:
        return None
    return [md_to_html(p) for p in parts]


def number_parts(parts: list[str]) -> list[str]:
    if len(parts) < 2:
        return parts
    return [f"{p}\n<i>({i}/{len(parts)})</i>" for i, p in enumerate(parts, 1)]


# -- answers ----------------------------------------------------------------------
def answer_body(rec: Any) -> str:
    """The answer itself: the record's ``answer`` field ("" while there is none)."""
    return (getattr(rec, "answer", None) or "").strip("\n")


def _looks_like_markdown(text: str) -> bool:
    return bool(re.search(r"^\s*(```|#{1,6}\s|[-*+]\s|\d+\.\s|>\s)|\*\*\S|`[^`\n]+`", text, re.M))


def as_markdown(body: str) -> str:
    """Command output (tables, logs) goes in a code block; an agent's Markdown stays as it is."""
    if not body.strip():
        return "(no output)"
    if _looks_like_markdown(body):
        return body
    if "\n" in body.strip() or "  " in body:
        return "```\n" + body.replace("```", "ʼʼʼ") + "\n```"
    return body


def figures(rec: Any) -> str:
    d = rec.details or {}
    bits = []
    tokens = (d.get("tokens_in") or 0) + (d.get("tokens_out") or 0)
    if tokens:
        bits.append(f"{tokens:,} tokens")
    if d.get("cost"):
        bits.append(f"${float(d['cost']):.4f}")
    if d.get("exit_code") not in (None, 0) and rec.state != DONE:
        bits.append(f"exit {d['exit_code']}")
    return " · ".join(bits)


def outcome_line(rec: Any, *, with_host: bool = True, now: float | None = None) -> str:
    """``✅ **web1** · done in 1.2 s · 1,234 tokens`` (Markdown)."""
    took = duration(elapsed(rec, now))
    head = f"{ICONS.get(rec.state, '•')} " + (f"**{rec.host}** · " if with_host else "")
    text = (
        f"{head}{state_label(rec.state)} in {took}"
        if rec.state == DONE
        else f"{head}{state_label(rec.state)} after {took}"
    )
    extra = figures(rec)
    if extra:
        text += f" · {extra}"
    if rec.state != DONE and rec.error:
        text += f"\n{rec.error}"
    if (rec.details or {}).get("lost") and rec.state == FAILED:
        text += "\n(the answer will follow if the machine comes back)"
    return text


def answer_markdown(records: Sequence[Any], spec: str | None = None) -> str:
    """The final answer for one order or a fan-out: one summary, per-node detail."""
    if len(records) == 1:
        rec = records[0]
        return outcome_line(rec) + "\n\n" + as_markdown(answer_body(rec))
    done = sum(1 for r in records if r.state == DONE)
    head = f"📡 **{spec or records[0].target_spec or 'fan-out'}** · {done}/{len(records)} done"
    others = [f"{n} {state_label(s)}" for s, n in _count_states(records).items() if s != DONE]
    if others:
        head += ", " + ", ".join(others)
    sections = [head]
    for rec in sorted(records, key=lambda r: (r.state == DONE, r.host)):
        sections.append(outcome_line(rec) + "\n\n" + as_markdown(answer_body(rec)))
    return "\n\n".join(sections)


def _count_states(records: Iterable[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    return counts


def answer_document(records: Sequence[Any]) -> str:
    """The full Markdown of every node's response document, for the attachment."""
    parts = []
    for rec in sorted(records, key=lambda r: r.host):
        parts.append(
            rec.response
            or f"# Order {rec.id}: {rec.state}\n\n- **Host:** {rec.host}\n- **Error:** {rec.error or '-'}\n"
        )
    return "\n\n---\n\n".join(p.rstrip("\n") for p in parts) + "\n"


def document_summary(
    records: Sequence[Any], spec: str | None, filename: str, size: int, limit: int = CAPTION_LIMIT
) -> str:
    """The HTML caption/message that goes with an answer sent as a document."""
    lines: list[str] = []
    if len(records) == 1:
        lines.append(md_to_html(outcome_line(records[0])))
        head = answer_body(records[0]).split("\n")[:8]
        if any(line.strip() for line in head):
            lines.append(f"<pre>{esc(chr(10).join(line[:80] for line in head)[:400])}\n…</pre>")
    else:
        done = sum(1 for r in records if r.state == DONE)
        lines.append(md_to_html(f"📡 **{spec or records[0].target_spec}** · {done}/{len(records)} done"))
        for rec in sorted(records, key=lambda r: (r.state == DONE, r.host))[:15]:
            lines.append(f"{ICONS.get(rec.state, '•')} {esc(rec.host)} {esc(state_label(rec.state))}")
        if len(records) > 15:
            lines.append(f"… and {len(records) - 15} more")
    lines.append(f"📎 Full answer ({size:,} characters) in <code>{esc(filename)}</code>")
    text = "\n".join(lines)
    while tg_len(text) > limit and len(lines) > 2:
        lines.pop(-2)
        text = "\n".join(lines)
    return text


# -- the status message -------------------------------------------------------------
def status_line(rec: Any, now: float | None = None, with_host: bool = True) -> str:
    head = f"{ICONS.get(rec.state, '•')} " + (f"<b>{esc(rec.host)}</b> " if with_host else "")
    text = f"{head}{esc(state_label(rec.state))} {duration(elapsed(rec, now))}"
    if rec.state == RUNNING and rec.progress:
        text += f"\n   › {esc(preview(rec.progress, 160))}"
    if is_terminal(rec.state) and rec.state != DONE and rec.error:
        text += f"\n   {esc(preview(rec.error, 200))}"
    return text


def status_text(records: Sequence[Any], spec: str | None = None, now: float | None = None, max_lines: int = 40) -> str:
    """The one message that follows an order (or a fan-out) from queued to finished."""
    now = now or time.time()
    if not records:
        return "📨 Sending…"
    first = records[0]
    payload = f"<i>{esc(preview(first.payload))}</i>"
    if len(records) == 1:
        return f"{status_line(first, now)}\n{payload}\n<code>{esc(first.id)}</code>"
    finished = sum(1 for r in records if is_terminal(r.state))
    head = f"📡 <b>{esc(spec or first.target_spec or 'fan-out')}</b> · {finished}/{len(records)} finished"
    busy = sorted(r.host for r in records if (getattr(r, "details", None) or {}).get("busy"))
    if busy:  # refused at the door because their queues are full
        head += f"\n⏳ busy, order refused (try again later): {esc(', '.join(busy))}"
    ordered = sorted(records, key=lambda r: (r.state == DONE, is_terminal(r.state), r.host))
    while True:
        shown = [status_line(r, now) for r in ordered[:max_lines]]
        if len(ordered) > max_lines:
            rest = _count_states(ordered[max_lines:])
            shown.append("… and " + ", ".join(f"{n} {state_label(s)}" for s, n in rest.items()))
        text = "\n".join([head, payload, *shown])
        if tg_len(text) <= TELEGRAM_LIMIT - 96 or max_lines <= 1:  # long errors or progress lines
            return text
        max_lines //= 2


# -- fleet views ------------------------------------------------------------------------
STATUS_ICONS = {HEALTHY: "🟢", DEGRADED: "🟠", DOWN: "🔴", UNKNOWN: "⚪"}


def machines_text(machines: list[dict[str, Any]], now: float | None = None) -> str:
    """Each machine with its status and the reason (``status``/``reason``: node_status, the
    dashboard's and the health playbook's rule)."""
    if not machines:
        return "No machines in the inventory."
    lines = [f"<b>Machines</b> ({len(machines)})"]
    for m in machines:
        icon = STATUS_ICONS.get(m.get("status", UNKNOWN), "⚪")
        groups = [g for g in m.get("groups", []) if g not in ("all", "galaxy_nodes", "ungrouped")]
        line = f"{icon} <b>{esc(m['name'])}</b> {esc(m.get('address', ''))}"
        if groups:
            line += f" [{esc(', '.join(groups))}]"
        state = ["connected"] if m.get("connected") else []
        status = m.get("status", UNKNOWN)
        state.append(HEALTHY if status == HEALTHY else f"{status}: {m.get('reason') or '-'}")
        if m.get("connected"):
            state.append(f"{m.get('running', 0)} running, {m.get('queued', 0)} queued")
        state.append(f"seen {ago(m.get('last_seen'), now)}")
        lines.append(line + "\n   " + esc(" · ".join(state)))
    return "\n".join(lines)


def fleet_status_text(
    machines: list[dict[str, Any]], recent: list[Any], active_alerts: int, now: float | None = None
) -> str:
    now = now or time.time()
    connected = sum(1 for m in machines if m.get("connected"))
    unhealthy = [m["name"] for m in machines if m.get("status") == DEGRADED]
    running = sum(m.get("running", 0) or 0 for m in machines)
    queued = sum(m.get("queued", 0) or 0 for m in machines)
    day = [r for r in recent if r.created and r.created > now - 86400]
    counts = _count_states(day)
    down = [m["name"] for m in machines if m.get("status") == DOWN]
    unknown = [m["name"] for m in machines if m.get("status") == UNKNOWN]
    icon = "🟢" if connected == len(machines) and not unhealthy and not down and not active_alerts else "🟠"
    lines = [f"{icon} <b>Fleet</b>: {connected}/{len(machines)} machines connected"]
    if down:
        lines.append(f"🔴 down: {esc(', '.join(down))}")
    if unhealthy:
        lines.append(f"🟠 degraded: {esc(', '.join(unhealthy))}")
    if unknown:
        lines.append(f"⚪ unknown: {esc(', '.join(unknown))}")
    lines.append(f"🏃 {running} running · ⏳ {queued} queued")
    if counts:
        lines.append("Last 24 h: " + esc(", ".join(f"{n} {state_label(s)}" for s, n in sorted(counts.items()))))
    else:
        lines.append("Last 24 h: no orders")
    lines.append(
        f"🚨 {active_alerts} active alert{'s' if active_alerts != 1 else ''}" if active_alerts else "No active alerts"
    )
    return "\n".join(lines)


def orders_text(records: list[Any], now: float | None = None) -> str:
    if not records:
        return "No orders from this chat yet."
    lines = [f"<b>Recent orders</b> ({len(records)})"]
    for r in records:
        lines.append(
            f"{ICONS.get(r.state, '•')} <b>{esc(r.host)}</b> {esc(state_label(r.state))} · "
            f"{ago(r.created, now)}\n   <code>{esc(r.id)}</code> <i>{esc(preview(r.payload, 60))}</i>"
        )
    return "\n".join(lines)


def health_text(results: dict[str, dict[str, Any]]) -> str:
    if not results:
        return "No machines."
    healthy = sum(1 for r in results.values() if r.get("healthy"))
    lines = [f"<b>Health</b>: {healthy}/{len(results)} healthy"]
    for host, r in sorted(results.items()):
        if r.get("healthy"):
            lines.append(f"✅ <b>{esc(host)}</b> healthy")
            continue
        if r.get("error"):
            lines.append(f"❌ <b>{esc(host)}</b>: {esc(r['error'])}")
            continue
        failing = [c for c in r.get("checks", []) if not c.get("ok")]
        lines.append(
            f"❌ <b>{esc(host)}</b>: "
            + esc("; ".join(f"{c.get('name')}: {c.get('message', '')}" for c in failing) or "failing")
        )
    return "\n".join(lines)


def audit_text(events: list[dict[str, Any]], limit_chars: int = 3800) -> str:
    if not events:
        return "No matching audit events."
    rows = []
    for e in events:
        ts = str(e.get("ts", ""))[5:19].replace("T", " ")
        oid = e.get("order_id") or ""
        rows.append(
            " ".join(
                x
                for x in (
                    ts,
                    e.get("host", "?"),
                    e.get("type", "?"),
                    e.get("severity", ""),
                    oid[-8:] if oid else "",
                    preview(str(e.get("message") or ""), 60),
                )
                if x
            )
        )
    body = "\n".join(rows)
    while tg_len(esc(body)) > limit_chars and len(rows) > 1:
        rows.pop(0)  # keep the newest
        body = "\n".join(rows)
    return f"<b>Audit</b> ({len(rows)} events, newest last)\n<pre>{esc(body)}</pre>"


# -- the commands -----------------------------------------------------------------------
NOT_AUTHORIZED = "⛔ Not authorized."  # plain text: also a button's pop-up
UNKNOWN_COMMAND = "Unknown command. /help lists what I understand."


def not_authorized_start(user_id: int) -> str:
    """What /start tells someone who may not use the bot (plain text)."""
    return f"Your Telegram user id is {user_id}. You are not authorized to use this bot."


def start_text(first_name: str, user_id: int, default: str | None) -> str:
    return (
        f"Hello {esc(first_name)}. Your Telegram user id is <code>{user_id}</code>; you are <b>authorized</b>.\n"
        f"Orders without a target go to {esc(default or '(you choose)')}. /help lists the commands."
    )


def help_text(commands: Iterable[Any], default: str | None) -> str:
    """/help from the command table (``name``, ``args``, ``help``: Markdown where ``{default}``
    stands for the machine that orders without a target go to)."""
    where = f"<b>{esc(default)}</b>" if default else "the machine you pick"
    lines = ["<b>Galaxy</b> runs your orders on the fleet's machines.", ""]
    for c in commands:
        first, *more = c.help.split("\n")
        head = f"<b>/{esc(c.name)}</b>" + (f" {esc(c.args)}" if c.args else "")
        lines.append(f"{head} — {_with_default(first, where)}")
        lines.extend(_with_default(line, where) for line in more)
    return "\n".join(lines)


def _with_default(text: str, where: str) -> str:
    return where.join(_inline(piece) for piece in text.split("{default}"))


def usage(command: str, args: str, note: str = "") -> str:
    """``Usage: /cancel ORDER_ID (see /orders)``; ``note`` is HTML."""
    return f"Usage: <code>/{esc(command)} {esc(args)}</code>" + (f"{note}" if note else "")


ORDER_USAGE = usage("order", "[target] what to do", "\ntarget: a machine, a group or <code>all</code> (see /machines)")


def not_understood(error: Any) -> str:
    """A target or a filter the bot does not know."""
    return f"❓ {esc(error)}"


def may_not(what: str, hosts: Iterable[str] | None = None) -> str:
    """A refused target: ``may_not("send orders to", ["db1"])``."""
    return f"⛔ You may not {esc(what)}" + (f" {esc(', '.join(hosts))}." if hosts is not None else ".")


def no_such_order(ref: str) -> str:
    return f"No order <code>{esc(ref)}</code> of yours."


def new_session_text(hosts: list[str]) -> str:
    return (
        f"🆕 Fresh agent session on <b>{esc(', '.join(hosts))}</b>: "
        "the next order from this chat starts without the earlier conversation."
    )


# -- an order on its way from a chat --------------------------------------------------------
def slow_down(wait: float, rate: int | None = None) -> str:
    """The rate limit's reply (``rate``: the user's orders a minute, when it is worth saying)."""
    if rate is None:
        return f"🐢 Slow down: try again in {int(wait) + 1} s."
    return f"🐢 Slow down: at most {rate} orders a minute. Try again in {int(wait) + 1} s."


def choose_machine_text(payload: str) -> str:
    return f"Which machine should do this?\n<i>{esc(preview(payload))}</i>"


def sending_text(spec: str, payload: str) -> str:
    """The status message before the fleet has the order."""
    return f"📨 Sending to <b>{esc(spec)}</b>…\n<i>{esc(preview(payload))}</i>"


def not_sent_text(error: Any) -> str:
    return f"❌ Not sent: {esc(error)}"


def dropped_text(payload: str) -> str:
    """A waiting order its sender cancelled."""
    return f"✖ Not sent.\n<i>{esc(preview(payload))}</i>"


def confirm_text(spec: str, reason: str, payload: str, seconds: float) -> str:
    return (
        f"⚠️ <b>Dangerous order</b> for <b>{esc(spec)}</b>: {esc(reason)}.\n"
        f"<i>{esc(preview(payload, 300))}</i>\n"
        f"Confirm within {int(seconds)} s, or it is not sent."
    )


def confirm_expired_text(spec: str | None, payload: str) -> str:
    return f"⌛ Not confirmed in time: the order to <b>{esc(spec)}</b> was not sent.\n<i>{esc(preview(payload))}</i>"


def cancel_line(host: str, *, state: str | None = None, error: Any = None, unreachable: bool = False) -> str:
    """One machine's line in the reply to a cancel: already ended (``state``), failed
    (``error``), or being cancelled."""
    if state is not None:
        return f"{esc(host)}: already {esc(state_label(state))}"
    if error is not None:
        return f"❌ {esc(host)} is unreachable: {esc(error)}" if unreachable else f"❌ {esc(host)}: {esc(error)}"
    return f"🚫 Cancelling on {esc(host)}…"


NOTHING_TO_CANCEL = "Nothing to cancel."


# -- alerts -------------------------------------------------------------------------------
def alert_text(host: str, kind: str, message: str, severity: Any = None) -> str:
    """An alert from a node or the control node."""
    icon = "🚨" if severity in ("error", "critical") else "⚠️"
    return f"{icon} <b>{esc(host)}</b> · {esc(kind)}\n{esc(message)}"


def problem_text(host: str, message: str) -> str:
    """A problem that is told once while it lasts (failing health check, silent worker)."""
    return f"🚨 <b>{esc(host)}</b>: {esc(message)}"


def recovered_text(host: str, message: str, since: float | None) -> str:
    return f"✅ <b>{esc(host)}</b> recovered: {esc(message)}\n(problem reported {ago(since)})"


def node_down_text(host: str, reason: str | None) -> str:
    return f"🔴 <b>{esc(host)}</b> is unreachable: {esc(reason or 'no connection')}"


def node_up_text(host: str, since: float | None) -> str:
    return f"🟢 <b>{esc(host)}</b> is reachable again (unreachable since {ago(since)})"


# -- permission prompts of running orders ---------------------------------------------------------
PERMISSION_VERBS = {"once": "✅ allowed once", "always": "✅ allowed for this order", "deny": "⛔ denied"}
# Plain texts: a button's pop-up.
PERMISSION_GONE = "This prompt is no longer waiting."
PERMISSION_NOT_YOURS = "Only the person who placed the order (or an admin) can answer this."


def permission_head(host: str, order_id: str, tool: str, detail: str) -> str:
    return (
        f"🔐 <b>{esc(host)}</b> · the agent asks to use <b>{esc(tool)}</b>\n"
        f"<pre>{esc(preview(detail, 600) or '-')}</pre>\norder <code>{esc(order_id)}</code>"
    )


def permission_text(host: str, order_id: str, tool: str, detail: str, timeout: float | None) -> str:
    """The prompt, waiting for a button."""
    wait = f"denied if nobody answers within {duration(timeout)}" if timeout else "waiting for an answer"
    return f"{permission_head(host, order_id, tool, detail)}\n<i>{esc(wait)}</i>"


def permission_decided_text(host: str, order_id: str, tool: str, detail: str, *, answer: str, by: str) -> str:
    verb = PERMISSION_VERBS.get(answer, esc(answer))
    return f"{permission_head(host, order_id, tool, detail)}\n{verb} by {esc(by)}"


def permission_expired_text(host: str, order_id: str, tool: str, detail: str, why: str = "") -> str:
    return f"{permission_head(host, order_id, tool, detail)}\n⌛ expired — denied" + (f" ({esc(why)})" if why else "")


def permission_failed(error: Any) -> str:
    """A button's pop-up when the node would not take the answer (plain text, short)."""
    return preview(f"Not taken: {error}", 190)
