"""Company-level stop (SPEC §13): a human reply from one address of a company's domain
stops the tenant's other live enrollments to that domain, where the sequences opted in.

Free-mail and disposable domains (gmail.com, outlook.com…) are not companies: two
prospects there share a provider, not an employer. The shell passes the list it loaded
(the ``freemail`` package's data); the rule stays a pure function of it.
"""

from __future__ import annotations

from collections.abc import Container

from dripdrop_core.correlation import participant_address
from dripdrop_core.suppression import recipient_domain

EXTRA_FREEMAIL = frozenset({"proton.me", "protonmail.com", "pm.me", "tutanota.com", "hey.com"})
"""Free-mail domains the ``freemail`` list lacks (checked against its 1.2.19 data)."""


def company_domain(address: str | None, freemail: Container[str]) -> str | None:
    """The company domain of ``address`` (a bare address or a ``From`` header), or
    ``None`` for a free-mail or disposable domain, or no domain at all."""
    bare = participant_address(address) if address else None
    if bare is None:
        return None
    domain = recipient_domain(bare)
    if not domain or "." not in domain or domain in freemail or domain in EXTRA_FREEMAIL:
        return None
    return domain


def company_key(tenant_key: str, domain: str) -> str:
    """The ``index`` key of a tenant's opted-in live enrollments to ``domain``."""
    return f"company:{len(tenant_key)}:{tenant_key}:{domain}"
