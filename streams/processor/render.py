"""Template rendering in a sandbox (SPEC §7): enrollment data fills subject and bodies.

The plain-text body and the subject render as written; the HTML body renders with
autoescaping, so a prospect's ``first_name`` of ``<b>`` arrives as text, not markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from dripdrop_core.errors import RecordError
from dripdrop_core.models import Step

_TEXT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_HTML = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)


class TemplateRenderError(RecordError):
    """A step's template failed for this enrollment's data; the step is not sent."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """One send's content: ``html`` is None for a step without an HTML template."""

    subject: str
    text: str
    html: str | None = None


@lru_cache(maxsize=4096)
def _compiled(source: str, html: bool = False) -> Template:
    """Compiling costs ~0.7 ms; a step's templates are rendered for every enrollment."""
    return (_HTML if html else _TEXT).from_string(source)


def template_errors(step: Step) -> list[str]:
    """Syntax errors in a step's templates, as ``field: message`` (checked at authoring:
    a template that cannot compile would fail every enrollment that reaches it)."""
    errors = []
    for field, source, html in (
        ("subject_template", step.subject_template, False),
        ("body_template", step.body_template, False),
        ("html_template", step.html_template, True),
    ):
        if source is None:
            continue
        try:
            _compiled(source, html)
        except TemplateSyntaxError as exc:
            errors.append(f"{field}: {exc.message} (line {exc.lineno})")
    return errors


def render_step(step: Step, data: dict[str, Any]) -> Rendered:
    """Render subject and bodies; a missing variable is an error, never an empty string."""
    try:
        return Rendered(
            subject=_compiled(step.subject_template).render(data),
            text=_compiled(step.body_template).render(data),
            html=None
            if step.html_template is None
            else _compiled(step.html_template, True).render(data),
        )
    except TemplateError as exc:
        raise TemplateRenderError(
            f"step {step.id} template failed: {exc}", code="template_error"
        ) from exc
