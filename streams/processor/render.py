"""Template rendering in a sandbox (SPEC §7): enrollment data fills subject and body."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from dripdrop_core.errors import RecordError
from dripdrop_core.models import Step

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class TemplateRenderError(RecordError):
    """A step's template failed for this enrollment's data; the step is not sent."""


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Template:
    """Compiling costs ~0.7 ms; a step's templates are rendered for every enrollment."""
    return _ENV.from_string(source)


def render_step(step: Step, data: dict[str, Any]) -> tuple[str, str]:
    """Render ``(subject, body)``; a missing variable is an error, never an empty string."""
    try:
        subject = _compiled(step.subject_template).render(data)
        body = _compiled(step.body_template).render(data)
    except TemplateError as exc:
        raise TemplateRenderError(
            f"step {step.id} template failed: {exc}", code="template_error"
        ) from exc
    return subject, body
