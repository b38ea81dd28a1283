"""Go-template-style query placeholders: strict at compile time, quote-aware at render."""

from __future__ import annotations

import pytest

from ceems.tsdb.templates import TemplateError, compile_template

ALLOWED = ("UUIDs", "Range")


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("up{uuid=~`{{.UUIDs}}`}[{{.Range}}]", r"up{uuid=~`a\.1|b`}[5m]"),
        ('up{uuid=~"{{.UUIDs}}"}', r'up{uuid=~"a\\.1|b"}'),
        ("up{uuid=~'{{ .UUIDs }}'}", r"up{uuid=~'a\\.1|b'}"),
        # a quote escaped inside a string does not end it
        ('f(up, "x", "\\"{{.UUIDs}}", "")', r'f(up, "x", "\"a\\.1|b", "")'),
        ("no placeholders", "no placeholders"),
    ],
)  # fmt: skip
def test_render_escapes_for_the_enclosing_string(source: str, rendered: str) -> None:
    template = compile_template(source, ALLOWED)
    assert template.render({"UUIDs": r"a\.1|b", "Range": "5m"}) == rendered


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("up[{{.Rnage}}]", r"unknown placeholder \{\{.Rnage\}\} \(known: Range, UUIDs\)"),
        ("up{{.Labels.x}}", r"unknown placeholder"),  # label placeholders only in sub-keys
        ("{{if .UUIDs}}x{{end}}", "unsupported template action"),
        ("{{.UUIDs | printf}}", "unsupported template action"),
        ("up{uuid=~`{{.UUIDs`}", "unclosed"),
    ],
)
def test_compile_refuses(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        compile_template(source, ALLOWED)


def test_label_placeholders_name_their_labels() -> None:
    key = compile_template("{{.Labels.provider}}_total", (), labels=True)
    assert key.labels == {"provider"}
    assert key.render({"Labels.provider": "rte"}) == "rte_total"


def test_render_needs_every_value() -> None:
    with pytest.raises(TemplateError, match="no value"):
        compile_template("[{{.Range}}]", ALLOWED).render({})
