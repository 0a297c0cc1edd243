"""LoCoMo conversations (snap-research/locomo, ACL 2024) as turns and scored questions.

The data is not shipped: point :func:`load_locomo` at a directory of ``conv-<id>.json`` files
(the project's benchmarks read ``../shared/datasets/locomo``; ``--data DIR`` names another copy).
The first ``sessions`` sessions of a conversation become turns -- ``"[8 May 2023] Caroline: ..."``,
the session date in the text as the issue asks, ``created_at`` from the date -- and the questions
kept are the single-hop, multi-hop and temporal ones (categories 4, 1, 2) whose evidence lies in
those sessions. :func:`token_f1` scores an answer as the LoCoMo paper does.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

CATEGORIES = {1: "multi-hop", 2: "temporal", 4: "single-hop"}


@dataclass(frozen=True)
class LocomoTurn:
    content: str
    session_id: str
    created_at: float

    def to_dict(self) -> dict[str, object]:
        return {
            "content": self.content,
            "role": "user",  # both speakers are people telling their own lives
            "session_id": self.session_id,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class LocomoQuestion:
    question: str
    answer: str
    category: str
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class LocomoConversation:
    name: str
    turns: tuple[LocomoTurn, ...]
    questions: tuple[LocomoQuestion, ...]


def _when(text: str) -> tuple[str, float]:
    """``"1:56 pm on 8 May, 2023"`` -> ``("8 May 2023", epoch seconds)``."""
    try:
        dt = datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc)
    except ValueError:
        return text.strip(), 0.0
    return f"{dt.day} {dt:%B %Y}", dt.timestamp()


def load_locomo(
    directory: str | Path, sessions: int, limit: int | None = None
) -> list[LocomoConversation]:
    """The conversations in ``directory`` (sorted by name), cut to their first ``sessions``."""
    files = sorted(Path(directory).glob("conv-*.json"))
    if not files:
        raise FileNotFoundError(f"no conv-*.json LoCoMo files in {directory}")
    out = []
    for path in files[:limit]:
        data = json.loads(path.read_text(encoding="utf-8"))
        conv = data.get("conversation", data)
        turns: list[LocomoTurn] = []
        kept_ids: set[str] = set()
        for i in range(1, sessions + 1):
            session = conv.get(f"session_{i}")
            if not session:
                break
            day, ts = _when(str(conv.get(f"session_{i}_date_time", "")))
            for j, turn in enumerate(session):
                text = " ".join(str(turn.get("text", "")).split())
                if not text:
                    continue
                kept_ids.add(str(turn.get("dia_id")))
                turns.append(LocomoTurn(f"[{day}] {turn['speaker']}: {text}", f"s{i}", ts + j))
        questions = []
        for qa in data.get("qa", []):
            category = CATEGORIES.get(int(qa.get("category", 0)))
            evidence = tuple(str(e) for e in qa.get("evidence", []))
            if category is None or "answer" not in qa or not evidence:
                continue
            if all(e in kept_ids for e in evidence):
                questions.append(
                    LocomoQuestion(str(qa["question"]), str(qa["answer"]), category, evidence)
                )
        out.append(LocomoConversation(path.stem, tuple(turns), tuple(questions)))
    return out


_ARTICLES = re.compile(r"\b(a|an|the|and)\b")


def normalize(text: str) -> list[str]:
    """LoCoMo's answer normalisation: lower case, no punctuation, no articles."""
    text = text.lower().replace(",", "")
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, answer: str) -> float:
    """Token F1 between a prediction and the gold answer (the LoCoMo paper's metric)."""
    pred, gold = normalize(prediction), normalize(answer)
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


__all__ = ["CATEGORIES", "LocomoConversation", "LocomoQuestion", "load_locomo", "token_f1"]
