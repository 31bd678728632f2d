from __future__ import annotations

import json

from ansible_collections.galaxy_protocol.fleet.plugins.modules import audit

EVENTS = [
    {"seq": 7, "ts": "2026-11-28T19:27:49.100Z", "type": "order_queued", "order": "o1"},
    {"seq": 8, "ts": "2026-11-28T19:27:49.300Z", "type": "order_done", "order": "o1"},
]
REPORT_OK = {"ok": True, "count": 8, "broken": None, "first_seq": 1, "last_seq": 8, "segments": 0}


def jsonl(records):
    return "".join(json.dumps(r) + "\n" for r in records)


def test_events_after_a_cursor(galaxy, run_module):
    galaxy.answer(0, jsonl(EVENTS))
    kind, result = run_module(audit, {"path": galaxy.path, "after": 6, "limit": 100})
    assert kind == "exit"
    assert result["events"] == EVENTS and result["count"] == 2 and result["cursor"] == 8
    assert result["lines"] == [json.dumps(e) for e in EVENTS]
    assert result["changed"] is False and "verification" not in result
    assert galaxy.calls[0]["argv"] == ["audit", "--json", "--after", "6", "--limit", "100"]


def test_no_new_events_keeps_the_cursor(galaxy, run_module):
    galaxy.answer(0, "")
    kind, result = run_module(audit, {"path": galaxy.path, "after": 8})
    assert kind == "exit"
    assert (result["events"], result["count"], result["cursor"]) == ([], 0, 8)


def test_from_the_start_reads_everything(galaxy, run_module):
    galaxy.answer(0, jsonl(EVENTS[:1]))
    kind, result = run_module(audit, {"path": galaxy.path})
    assert kind == "exit" and result["cursor"] == 7
    assert galaxy.calls[0]["argv"] == ["audit", "--json", "--after", "0", "--limit", "0"]


def test_verify_ok_then_reads(galaxy, run_module):
    galaxy.answer(0, jsonl([REPORT_OK]))
    kind, result = run_module(audit, {"path": galaxy.path, "verify": True, "after": 8})
    assert kind == "exit"
    assert result["verification"] == REPORT_OK
    assert [c["argv"] for c in galaxy.calls] == [
        ["audit", "--json", "--verify"], ["audit", "--json", "--after", "8", "--limit", "0"]]


def test_broken_chain_fails_naming_the_link(galaxy, run_module):
    report = dict(REPORT_OK, ok=False, count=7, broken={
        "segment": "audit.jsonl", "line": 8, "seq": 8, "reason": "edited",
        "detail": "the event's content does not match its hash"})
    galaxy.answer(1, jsonl([report]))
    kind, result = run_module(audit, {"path": galaxy.path, "verify": True})
    assert kind == "fail"
    assert result["msg"] == ("audit chain broken at seq 8 (audit.jsonl, line 8): "
                             "the event's content does not match its hash")
    assert result["verification"]["ok"] is False
    assert len(galaxy.calls) == 1


def test_unreadable_config_fails_with_the_cli_message(galaxy, run_module):
    galaxy.answer(2, "", "galaxy audit: /etc/galaxy/config.yml: invalid YAML\n")
    kind, result = run_module(audit, {"path": galaxy.path})
    assert kind == "fail"
    assert result["msg"] == "galaxy audit failed (exit 2): galaxy audit: /etc/galaxy/config.yml: invalid YAML"


def test_bad_line_is_reported(galaxy, run_module):
    galaxy.answer(0, jsonl(EVENTS) + "not json\n")
    kind, result = run_module(audit, {"path": galaxy.path})
    assert kind == "fail" and "line 3 is not JSON" in result["msg"]


def test_negative_numbers_rejected(galaxy, run_module):
    for option in ("limit", "after"):
        kind, result = run_module(audit, {"path": galaxy.path, option: -1})
        assert kind == "fail" and f"{option} must be 0 or more" in result["msg"]
    assert galaxy.calls == []


def test_runs_in_check_mode(galaxy, run_module):
    galaxy.answer(0, jsonl(EVENTS))
    kind, result = run_module(audit, {"path": galaxy.path, "_ansible_check_mode": True})
    assert kind == "exit" and result["count"] == 2
