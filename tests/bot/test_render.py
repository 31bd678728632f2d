"""The bot's pure parts: Markdown to Telegram HTML, splitting long answers, status texts."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from galaxy_fleet.bot import render as r


@dataclass
class Rec:  # the OrderRecord fields the renderer reads
    id: str = "20261128T120000.000001Z-aaaa0001"
    host: str = "web1"
    state: str = "done"
    payload: str = "fix the failing test"
    target_spec: str | None = "web1"
    batch: str | None = None
    created: float = field(default_factory=lambda: time.time() - 30)
    updated: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: str | None = None
    error: str | None = None
    answer: str | None = None
    response: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def test_markdown_to_html_escapes_and_formats() -> None:
    md = "# Title\n\nUse `a<b>` and **bold & co** <script>\n- item\n[docs](https://example.org/x?a=1&b=2)\n" \
         "```python\nif a < b:\n    print('**not bold**')\n```"
    html = r.md_to_html(md)
    assert "<b>Title</b>" in html
    assert "<code>a&lt;b&gt;</code>" in html
    assert "<b>bold &amp; co</b> &lt;script&gt;" in html
    assert "• item" in html
    assert '<a href="https://example.org/x?a=1&amp;b=2">docs</a>' in html
    assert '<pre><code class="language-python">if a &lt; b:\n    print(\'**not bold**\')</code></pre>' in html
    # Only our own tags survive.
    assert set(re.findall(r"</?(\w+)", html)) <= {"b", "code", "pre", "a"}


def test_unclosed_fence_and_javascript_links_are_safe() -> None:
    html = r.md_to_html("[x](javascript:alert(1))\n```\nopen <fence>")
    assert "<a" not in html and "&lt;fence&gt;" in html and html.endswith("</pre>")


def test_short_answer_is_one_part() -> None:
    assert r.split_markdown("hello") == ["hello"]


def test_split_on_paragraphs_and_code_blocks() -> None:
    para = "word " * 150  # ~750 chars
    code = "```sh\n" + "\n".join(f"line {i} " + "x" * 60 for i in range(40)) + "\n```"  # ~2.8k chars
    md = "\n\n".join([para.strip()] * 4 + [code] + [para.strip()] * 3)
    parts = r.split_markdown(md, limit=4096)
    assert parts is not None and 2 <= len(parts) <= 4
    for p in parts:
        assert r.tg_len(p) <= 4096
        # Never a code block cut open: every <pre> closes in the same part.
        assert p.count("<pre") == p.count("</pre>")
    joined = "\n\n".join(parts)
    assert joined.count("line 39") == 1 and joined.count("word") == 7 * 150


def test_a_huge_code_block_is_reopened_with_its_language() -> None:
    code = "```python\n" + "\n".join(f"print({i})  # {'y' * 70}" for i in range(300)) + "\n```"
    parts = r.split_markdown(code, limit=4096)
    assert parts is not None and len(parts) >= 5
    for p in parts:
        assert p.startswith('<pre><code class="language-python">') and p.endswith("</code></pre>")
        assert r.tg_len(p) <= 4096
    assert sum(p.count("print(") for p in parts) == 300


def test_one_enormous_line_is_cut_at_spaces() -> None:
    parts = r.split_markdown("abc " * 3000, limit=4096)
    assert parts is not None and len(parts) == 3
    assert all(r.tg_len(p) <= 4096 for p in parts)
    assert "".join(parts).replace(" ", "") == "abc" * 3000


def test_too_many_parts_means_a_document() -> None:
    md = "\n\n".join(["paragraph " * 80] * 40)
    assert r.split_markdown(md, limit=4096, max_parts=3) is None
    assert r.split_markdown(md, limit=4096, max_parts=20) is not None


def test_length_counts_utf16_units() -> None:
    assert r.tg_len("😀") == 2 and r.tg_len("é") == 1
    parts = r.split_markdown("😀" * 3000, limit=4096)
    assert parts is not None and all(r.tg_len(p) <= 4096 for p in parts) and len(parts) == 2


def test_answer_body_and_plain_output() -> None:
    rec = Rec(answer="Filesystem  Size\n/dev/sda1   10G\n",
              response="# Order X: done\n\n## Order\n\ndf -h\n\n## Response\n\nsomething else\n")
    body = r.answer_body(rec)
    assert body == "Filesystem  Size\n/dev/sda1   10G"  # the field, not the document
    assert r.as_markdown(body).startswith("```\n")  # aligned columns keep their monospace
    assert r.as_markdown("**Fixed** the test") == "**Fixed** the test"
    assert r.as_markdown("") == "(no output)"


AGENT_ANSWER = ("I looked at the failing test.\n\n## Response\n\nThe fix: close the file before the rename.\n\n"
                "## Order\n\nDone in two steps.")


def test_answer_with_its_own_response_heading_is_shown_whole() -> None:
    """An agent's answer may hold its own ``## Response`` and ``## Order`` lines: nothing
    before them is lost, in the message, a split message or the attachment's caption."""
    document = f"# Order X: done\n\n## Order\n\nfix it\n\n## Response\n\n{AGENT_ANSWER}\n"
    rec = Rec(answer=AGENT_ANSWER, response=document)
    md = r.answer_markdown([rec])
    assert md.startswith("✅ **web1** · done in")
    assert md.endswith(AGENT_ANSWER)
    html = "\n".join(r.split_markdown(md, limit=60) or [])
    for line in ("I looked at the failing test.", "<b>Response</b>", "The fix: close the file before the rename.",
                 "Done in two steps."):
        assert line in html
    fan = r.answer_markdown([rec, Rec(id="x2", host="web2", answer="second")], "web")
    assert AGENT_ANSWER in fan and "second" in fan
    caption = r.document_summary([rec], "web1", "order.md", len(document))
    assert "I looked at the failing test." in caption
    assert r.answer_document([rec]).startswith(document.rstrip("\n"))  # the attachment: the whole document


def test_status_text_single_and_fan_out() -> None:
    now = time.time()
    running = Rec(state="running", started=now - 75, progress="compiling foo.c", finished=None)
    text = r.status_text([running], now=now)
    assert "🏃 <b>web1</b> running 1:15" in text and "› compiling foo.c" in text and running.id in text
    many = [Rec(id=f"id{i}", host=f"n{i:03d}", state="done" if i % 2 else "queued", target_spec="all")
            for i in range(100)]
    text = r.status_text(many, "all", now=now)
    assert text.startswith("📡 <b>all</b> · 50/100 finished")
    assert "… and" in text and r.tg_len(text) < 4096
    # Unfinished parts are listed first.
    assert text.index("queued") < text.index("done")
    # Long error lines: fewer machines listed, still one message.
    failed = [Rec(id=f"f{i}", host=f"n{i:03d}", state="failed", error="e" * 400) for i in range(100)]
    text = r.status_text(failed, "all", now=now)
    assert r.tg_len(text) <= 4096 and "… and" in text


def test_fan_out_answer_has_one_summary_and_per_node_detail() -> None:
    recs = [Rec(host="web1", answer="ok from web1"),
            Rec(id="x2", host="web2", state="failed", error="web2 is unreachable: connection refused")]
    md = r.answer_markdown(recs, "web")
    assert md.startswith("📡 **web** · 1/2 done, 1 failed")
    assert md.index("web2") < md.index("ok from web1")  # failures first
    assert "connection refused" in md


def test_document_summary_fits_a_caption() -> None:
    recs = [Rec(id=f"i{i}", host=f"h{i}", state="done") for i in range(40)]
    cap = r.document_summary(recs, "all", "orders-x.md", 123456)
    assert r.tg_len(cap) <= r.CAPTION_LIMIT and "123,456 characters" in cap and "… and 25 more" in cap


def test_figures_and_outcome() -> None:
    rec = Rec(details={"tokens_in": 1000, "tokens_out": 234, "cost": 0.0123, "timings": {"run_s": 62.0}})
    assert r.outcome_line(rec) == "✅ **web1** · done in 1:02 · 1,234 tokens · $0.0123"
    lost = Rec(state="failed", error="lost contact with web1", details={"lost": True})
    assert "answer will follow" in r.outcome_line(lost)


def test_audit_text_keeps_the_newest() -> None:
    events = [{"ts": f"2026-11-28T12:00:{i % 60:02d}.000Z", "host": "web1", "type": "order_done",
               "severity": "info", "order_id": f"o{i}", "message": "x" * 50} for i in range(200)]
    text = r.audit_text(events)
    assert r.tg_len(text) <= 4096 and "o199" in text and "o0 " not in text


def test_a_long_block_starts_in_the_message_before_it() -> None:
    md = "✅ **web2** · done in 0.1 s\n\n```\n" + "\n".join(str(i) for i in range(1, 1501)) + "\n```"
    parts = r.split_markdown(md, limit=4080)
    assert parts is not None and len(parts) == 2
    assert parts[0].startswith("✅ <b>web2</b>") and "<pre>1\n2\n" in parts[0]
    assert all(p.count("<pre>") == p.count("</pre>") == 1 for p in parts)


def test_help_and_the_command_menu_come_from_the_command_table() -> None:
    from galaxy_fleet.bot.commands import COMMANDS, Commands

    names = [c.name for c in COMMANDS]
    assert len(set(names)) == len(names)
    for c in COMMANDS:
        assert re.fullmatch(r"[a-z0-9_]{1,32}", c.name) and 1 <= len(c.menu) <= 256  # what Telegram accepts
        assert getattr(Commands, c.handler.__name__) is c.handler
    text = r.help_text(COMMANDS, "web<1>")
    lines = text.split("\n")
    for c in COMMANDS:
        head = f"<b>/{c.name}</b>" + (f" {r.esc(c.args)}" if c.args else "") + " — "
        assert any(line.startswith(head) for line in lines), head
    order = next(line for line in lines if line.startswith("<b>/order</b>"))
    assert "<code>all</code>" in order and order.endswith("without one it goes to <b>web&lt;1&gt;</b>)")
    assert "Plain text in this chat is an order to <b>web&lt;1&gt;</b> too." in lines
    assert "the machine you pick" in r.help_text(COMMANDS, None)
    menu = {c.name: c.menu for c in COMMANDS}
    assert menu["order"] == "send an order: /order [target] text" and menu["status"] == "fleet summary"


def test_permission_prompt_texts_escape_what_the_agent_asks() -> None:
    asked = r.permission_text("web1", "o1", "bash", "echo <b>hi</b> > x", 300)
    assert "<pre>echo &lt;b&gt;hi&lt;/b&gt; &gt; x</pre>" in asked and "within 5:00" in asked
    decided = r.permission_decided_text("web1", "o1", "bash", "ls", answer="always", by="telegram:1(@a<b)")
    assert decided.endswith("✅ allowed for this order by telegram:1(@a&lt;b)")
    assert r.permission_expired_text("web1", "o1", "bash", "ls").endswith("⌛ expired — denied")
    assert len(r.permission_failed("x" * 500)) <= 190
