"""The API face of ambiguous sends (``streams/sends.py`` does the work): list and settle."""

from __future__ import annotations

from streams.api._context import Context
from streams.sends import AmbiguousSend, Resolver, SendResolution, list_ambiguous_sends


class AmbiguousSends:
    """The ambiguous-send calls of ``DripDrop``."""

    def __init__(self, context: Context) -> None:
        self._ctx = context

    def list_ambiguous_sends(self, *, tenant_key: str | None) -> list[AmbiguousSend]:
        return list_ambiguous_sends(self._ctx.engine, tenant_key=tenant_key)

    def resolve_ambiguous_send(
        self, step_execution_id: str, *, tenant_key: str, sent: bool
    ) -> SendResolution:
        ctx = self._ctx
        resolver = Resolver(ctx.engine, ctx.publisher, ctx.codecs, ctx.settings)
        return resolver.resolve(
            step_execution_id, tenant_key=tenant_key, resolution="sent" if sent else "not_sent"
        )
