"""Step templates (SPEC §7): text as written, HTML autoescaped, syntax errors named."""

from __future__ import annotations

import pytest

from dripdrop_core.models import Step
from streams.processor.render import Rendered, TemplateRenderError, render_step, template_errors


def _step(**templates: str | None) -> Step:
    return Step(id="s", version_id="v", tenant_key="t", key="k", position=0, **templates)


def test_html_is_escaped_and_text_is_not() -> None:
    step = _step(
        subject_template="Hi {{ name }}",
        body_template="Hi {{ name }}",
        html_template="<p>Hi {{ name }}</p>",
    )
    assert render_step(step, {"name": "<i>Bo</i> & Co"}) == Rendered(
        subject="Hi <i>Bo</i> & Co",
        text="Hi <i>Bo</i> & Co",
        html="<p>Hi &lt;i&gt;Bo&lt;/i&gt; &amp; Co</p>",
    )


def test_a_step_without_html_renders_text_only() -> None:
    assert render_step(_step(body_template="x"), {}).html is None


def test_a_missing_variable_in_the_html_fails_the_render() -> None:
    with pytest.raises(TemplateRenderError, match="'name' is undefined"):
        render_step(_step(html_template="{{ name }}"), {})


def test_template_errors_name_the_field_and_line() -> None:
    step = _step(subject_template="{{ ok }}", body_template="a\n{% if %}", html_template="{{ x")
    errors = template_errors(step)
    assert [e.split(":")[0] for e in errors] == ["body_template", "html_template"]
    assert "(line 2)" in errors[0]
    assert template_errors(_step(body_template="{{ a }}", html_template=None)) == []
