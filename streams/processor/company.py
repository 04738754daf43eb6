"""The company-level stop in the shell (SPEC §13; the rule: ``dripdrop_core.company``).

The ``index`` table keeps, per tenant and company domain, the enrollments of opted-in
versions (``SequenceVersion.company_stop``); a human reply on one of them stops the
others that are still live. The free-mail list is the ``freemail`` package's data, read
once from its files (not through its module, which would load ``tldextract``).
"""

from __future__ import annotations

import importlib.util
from datetime import datetime
from functools import cache
from pathlib import Path

from dripdrop_core.company import company_domain, company_key
from dripdrop_core.enrollment import TERMINAL, Event
from dripdrop_core.enrollment import applies as enrollment_applies
from dripdrop_core.models import SequenceVersion
from streams.processor.flow import Processor
from streams.processor.runtime import EnrollmentRuntime, Outputs

PRUNE_ABOVE = 64
"""Entries a domain's list may hold before finished enrollments are dropped from it."""


@cache
def freemail() -> frozenset[str]:
    """Free-mail and disposable domains (``freemail``'s ``free.txt`` and ``disposable.txt``)."""
    spec = importlib.util.find_spec("freemail")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the freemail package is not installed (a dependency of dripdrop)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return frozenset(
        line.strip().lower()
        for name in ("free.txt", "disposable.txt")
        for line in (data / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    )


def note_enrollment(p: Processor, e: EnrollmentRuntime, version: SequenceVersion) -> None:
    """Remember a new enrollment of an opted-in version under its company domain."""
    if not version.company_stop:
        return
    domain = company_domain(e.recipient, freemail())
    if domain is None:
        return
    key = company_key(e.tenant_key, domain)
    ids: list[str] = list(p.index.get(key) or [])
    if len(ids) >= PRUNE_ABOVE:
        ids = [i for i in ids if _live(p, i) is not None]
    if e.id not in ids:
        ids.append(e.id)
        p.index[key] = ids


def stop_company(p: Processor, replied: EnrollmentRuntime, now: datetime, out: Outputs) -> None:
    """A human replied on ``replied``: stop the tenant's other live opted-in enrollments to
    its company domain (``enrollment.company_stopped``), then forget the domain's list."""
    version = p.config.version(replied.version_id)
    if version is None or not version.company_stop:
        return
    domain = company_domain(replied.recipient, freemail())
    if domain is None:
        return
    key = company_key(replied.tenant_key, domain)
    for other_id in p.index.get(key) or []:
        other = _live(p, other_id)
        if other is None or other.id == replied.id or other.tenant_key != replied.tenant_key:
            continue
        other_version = p.config.version(other.version_id)
        if other_version is None or not other_version.company_stop:
            continue
        if enrollment_applies(other.state, Event.STOP):
            p.transition(
                other,
                Event.STOP,
                now,
                out,
                reason="company_stopped",
                urgent=True,
                announce="enrollment.company_stopped",
                attrs={"domain": domain, "replied_enrollment_id": replied.id},
            )
    p.index.pop(key, None)


def _live(p: Processor, enrollment_id: str) -> EnrollmentRuntime | None:
    e = p.enrollment(enrollment_id)
    return None if e is None or e.state in TERMINAL else e
