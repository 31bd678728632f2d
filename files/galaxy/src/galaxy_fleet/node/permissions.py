"""Permission prompts of running orders: the agent asks, a person answers.

An agent that wants to run a tool the node's policy guards (opencode's
``permission: ask``) waits until someone decides. The executor running the
order records each prompt it waits on as a small file::

    state/permissions/<order id>/<permission id>.ask.json     the prompt
    state/permissions/<order id>/<permission id>.answer.json  its decision

The answer comes from ``galaxy remote``'s ``permission`` op (the control
plane relaying a button press) or ``galaxy order permission`` on the node; the
executor polls for it and forwards it to the agent. The answer file is
created exclusively (a hard link of a complete temporary file), so the first
decision wins: a second answer, or one that arrives after the executor let the
prompt expire, is refused with the decision that stands. The executor removes
an order's directory when the run ends.

Answers: ``once`` (allow this call), ``always`` (allow this tool for the rest
of the order; never beyond it), ``deny``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from galaxy_fleet.order import OrderError, check_name, utcnow

ANSWERS = ("once", "always", "deny")
_ALIASES = {"reject": "deny", "allow": "once"}
MAX_BY = 128


class PromptError(ValueError):
    """An answer that cannot be taken (bad value, already decided)."""


class PromptNotFound(LookupError):
    """No such prompt is waiting for an answer."""


def normalize_answer(answer: Any) -> str:
    value = _ALIASES.get(answer, answer) if isinstance(answer, str) else answer
    if value not in ANSWERS:
        raise PromptError(f"answer must be one of {', '.join(ANSWERS)}, got {answer!r}")
    return str(value)


def _check_by(by: Any) -> str:
    if not isinstance(by, str) or not by.strip() or len(by) > MAX_BY or any(ord(c) < 32 for c in by):
        raise PromptError(f"'by' must name who answers (a non-empty string of at most {MAX_BY} characters)")
    return by.strip()


def _check(kind: str, value: Any) -> str:
    try:
        return check_name(kind, value)
    except OrderError as exc:
        raise PromptError(str(exc)) from None


def check_ids(order_id: Any, permission_id: Any) -> None:
    """Raise PromptError unless both ids are safe names."""
    _check("order id", order_id)
    _check("permission id", permission_id)


class Prompts:
    """The prompts of the orders running on one spool."""

    def __init__(self, spool_dir: Path | str):
        self.root = Path(spool_dir) / "state" / "permissions"

    def _dir(self, order_id: str) -> Path:
        return self.root / _check("order id", order_id)

    def _paths(self, order_id: str, permission_id: str) -> tuple[Path, Path]:
        d = self._dir(order_id)
        pid = _check("permission id", permission_id)
        return d / f"{pid}.ask.json", d / f"{pid}.answer.json"

    # -- the executor's side ---------------------------------------------
    def ask(self, order_id: str, permission_id: str, info: dict[str, Any]) -> None:
        """Record a prompt that waits for an answer."""
        ask, _ = self._paths(order_id, permission_id)
        ask.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._write(ask, {**info, "order": order_id, "permission": permission_id, "asked": utcnow()}, replace=True)

    def answered(self, order_id: str, permission_id: str) -> dict[str, Any] | None:
        """The decision on a prompt, or None while it waits."""
        _, answer = self._paths(order_id, permission_id)
        try:
            data = json.loads(answer.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # written complete by link(); unreadable means damaged: the prompt expires
        return data if isinstance(data, dict) and data.get("answer") in ANSWERS else None

    def clear(self, order_id: str) -> None:
        """Forget every prompt of an order (its run ended)."""
        try:
            shutil.rmtree(self._dir(order_id))
        except FileNotFoundError:
            pass

    # -- the answering side -----------------------------------------------
    def decide(
        self, order_id: str, permission_id: str, answer: str, by: str, **extra: Any
    ) -> tuple[dict[str, Any], bool]:
        """Record a decision unless one stands already.

        Returns (the decision that stands, whether it is this one)."""
        ask, path = self._paths(order_id, permission_id)
        decision = {
            "order": order_id,
            "permission": permission_id,
            "answer": normalize_answer(answer),
            "by": _check_by(by),
            "at": utcnow(),
            **extra,
        }
        if not ask.parent.is_dir():
            raise PromptNotFound(f"order {order_id} has no permission prompt waiting")
        if self._write(path, decision, replace=False):
            return decision, True
        return self.answered(order_id, permission_id) or decision, False

    def answer(self, order_id: str, permission_id: str, answer: str, by: str) -> dict[str, Any]:
        """A person's answer to a waiting prompt (first decision wins)."""
        answer = normalize_answer(answer)
        by = _check_by(by)
        ask, _ = self._paths(order_id, permission_id)
        try:
            prompt = json.loads(ask.read_bytes())
        except FileNotFoundError:
            raise PromptNotFound(f"no permission prompt {permission_id} is waiting in order {order_id}") from None
        except (OSError, ValueError):
            raise PromptNotFound(f"permission prompt {permission_id} of order {order_id} is unreadable") from None
        decision, taken = self.decide(order_id, permission_id, answer, by)
        if not taken:
            raise PromptError(
                f"permission prompt {permission_id} was already decided: "
                f"{decision.get('answer')} by {decision.get('by')}"
            )
        return {**decision, "tool": prompt.get("tool"), "from": prompt.get("from")}

    def pending(self, order_id: str | None = None) -> list[dict[str, Any]]:
        """Prompts that wait for an answer, oldest first."""
        dirs = [self._dir(order_id)] if order_id else sorted(p for p in self._listdir(self.root))
        out: list[dict[str, Any]] = []
        for d in dirs:
            for name in sorted(self._listdir(d)):
                if not name.name.endswith(".ask.json"):
                    continue
                pid = name.name[: -len(".ask.json")]
                if (d / f"{pid}.answer.json").exists():
                    continue
                try:
                    data = json.loads(name.read_bytes())
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict):
                    out.append(data)
        return sorted(out, key=lambda p: str(p.get("asked", "")))

    @staticmethod
    def _listdir(path: Path) -> list[Path]:
        try:
            return list(path.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    @staticmethod
    def _write(path: Path, obj: dict[str, Any], *, replace: bool) -> bool:
        """Write ``obj`` complete at ``path``; without ``replace``, only if nothing is there yet."""
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            try:
                view = memoryview(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            if replace:
                os.replace(tmp, path)
                return True
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
