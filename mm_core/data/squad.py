"""SQuAD v1.1 JSON (also XQuAD): one text record per question.

``text`` is the question (``text="context"``: the paragraph; ``"both"``: question,
a blank line, then the paragraph). Labels: ``title``, ``answer`` (first answer),
``answers`` (JSON list of all), ``answer_start`` and ``context``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from mm_core.data.records import SampleRecord
from mm_core.errors import ConfigError


def _squad_file(root: Path, path: str | os.PathLike | None) -> Path:
    if path is not None:
        p = Path(path)
        return p if p.is_absolute() else root / p
    if root.is_file():
        return root
    found = sorted(root.glob("*.json"))
    if len(found) != 1:
        raise ConfigError(f"squad: expected one *.json under {root} (found {len(found)}); pass path=")
    return found[0]


def read_squad(
    root: str | os.PathLike,
    *,
    source: str = "squad",
    path: str | os.PathLike | None = None,
    text: Literal["question", "context", "both"] = "question",
) -> Iterator[SampleRecord]:
    """Stream one record per question of a SQuAD-layout JSON file (``root`` or ``root/path``)."""
    if text not in ("question", "context", "both"):
        raise ConfigError(f"squad: text must be 'question', 'context' or 'both', not {text!r}")
    file = _squad_file(Path(root).resolve(), path)
    with open(file, encoding="utf-8") as f:
        data = json.load(f)
    seen: set[str] = set()
    for a, article in enumerate(data.get("data", [])):
        title = str(article.get("title", ""))
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            context = str(paragraph.get("context", ""))
            for q, qa in enumerate(paragraph.get("qas", [])):
                qid = str(qa.get("id") or f"{a}-{p}-{q}")
                question = str(qa.get("question", ""))
                answers = [ans.get("text", "") for ans in qa.get("answers", [])]
                labels = {
                    "title": title,
                    "answer": answers[0] if answers else "",
                    "answers": json.dumps(answers, ensure_ascii=False),
                    "context": context,
                }
                if qa.get("answers"):
                    labels["answer_start"] = str(qa["answers"][0].get("answer_start", ""))
                content = {"question": question, "context": context}.get(text, f"{question}\n\n{context}")
                rec = SampleRecord(f"{source}/{qid}", source, labels=labels)
                if content.strip():
                    rec.modalities["text"] = content
                else:
                    rec.errors.append(f"empty {text}")
                if qid in seen:
                    rec.errors.append(f"duplicate question id {qid!r}")
                    rec.sample_id += f"#{a}-{p}-{q}"
                seen.add(qid)
                yield rec
