"""Template rendering in a sandbox (SPEC §7): enrollment data fills subject and body."""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from dripdrop_core.errors import RecordError
from dripdrop_core.models import Step

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class TemplateRenderError(RecordError):
    """A step's template failed for this enrollment's data; the step is not sent."""


def render_step(step: Step, data: dict[str, Any]) -> tuple[str, str]:
    """Render ``(subject, body)``; a missing variable is an error, never an empty string."""
    try:
        subject = _ENV.from_string(step.subject_template).render(data)
        body = _ENV.from_string(step.body_template).render(data)
    except TemplateError as exc:
        raise TemplateRenderError(
            f"step {step.id} template failed: {exc}", code="template_error"
        ) from exc
    return subject, body
