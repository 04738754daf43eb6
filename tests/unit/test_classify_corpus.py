"""The classifier on the checked-in corpus (``tests/corpus/inbound/<intent>/*.eml``).

Each message's directory is its true intent; ``expected.json`` adds what the
classifier must extract (return date, bounce type, the original Message-ID). The test
prints precision and recall per class and holds bounce and ooo to 0.98.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from dripdrop_core.classify import classify, classify_mime, parse_mail, view_from_fields
from dripdrop_core.correlation import Intent

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "inbound"
EXPECTED: dict[str, dict[str, str | None]] = {
    k: v for k, v in json.loads((CORPUS / "expected.json").read_text()).items() if k != "_doc"
}
SAMPLES = sorted(CORPUS.glob("*/*.eml"))
TARGETS = {Intent.BOUNCE: 0.98, Intent.OOO: 0.98}


def _received(raw: bytes) -> date:
    return parsedate_to_datetime(str(message_from_bytes(raw, policy=policy.default)["Date"])).date()


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_corpus_covers_every_class_and_languages() -> None:
    counts = Counter(p.parent.name for p in SAMPLES)
    assert set(counts) == {"reply", "ooo", "auto_reply", "bounce", "complaint"}
    assert counts["ooo"] >= 14 and counts["bounce"] >= 8 and counts["reply"] >= 10
    assert set(EXPECTED) <= {_name(p) for p in SAMPLES}


@pytest.mark.parametrize("path", SAMPLES, ids=_name)
def test_corpus_message_classified_with_its_data(path: Path) -> None:
    raw = path.read_bytes()
    found = classify_mime(raw, received=_received(raw))
    assert found.intent == Intent(path.parent.name), found.data
    for key, value in EXPECTED.get(_name(path), {}).items():
        assert found.data.get(key) == value, (key, found.data)


def test_corpus_precision_recall_per_class(capsys: pytest.CaptureFixture[str]) -> None:
    truth: list[Intent] = []
    guess: list[Intent] = []
    for path in SAMPLES:
        raw = path.read_bytes()
        truth.append(Intent(path.parent.name))
        guess.append(classify_mime(raw, received=_received(raw)).intent)
    lines = [f"{'class':<11} {'n':>3} {'precision':>9} {'recall':>6}"]
    scores: dict[Intent, tuple[float, float]] = {}
    for intent in sorted(set(truth), key=str):
        tp = sum(1 for t, g in zip(truth, guess, strict=True) if t == g == intent)
        predicted = sum(1 for g in guess if g == intent)
        actual = sum(1 for t in truth if t == intent)
        scores[intent] = (tp / predicted if predicted else 0.0, tp / actual)
        lines.append(
            f"{intent:<11} {actual:>3} {scores[intent][0]:>9.3f} {scores[intent][1]:>6.3f}"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    for intent, target in TARGETS.items():
        precision, recall = scores[intent]
        assert precision >= target and recall >= target, (intent, precision, recall)


@pytest.mark.parametrize("path", SAMPLES, ids=_name)
def test_corpus_fields_path_agrees_on_intent(path: Path) -> None:
    """A host's record (headers, subject, bodies; no MIME tree) classifies the same:
    for reports the Content-Type header and the text stand in for the parts."""
    raw = path.read_bytes()
    mail = parse_mail(raw)
    view = view_from_fields(mail.headers, mail.subject, mail.body_text, mail.body_html)
    found = classify(view, received=_received(raw))
    assert found.intent == Intent(path.parent.name), found.data
