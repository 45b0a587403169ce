"""Prompt templates as plain `{column}` placeholders: the one rule every template obeys, whether
it comes from a spec, a dataset mapping or an imported adapter's training_info.json.

str.format would also run format specs (`{text:>2000000}` builds a 2 MB string per row),
conversions (`{text!r}`) and attribute or index access (`{text.__class__}`), so those are refused.
"""

from __future__ import annotations

import string

MAX_TEMPLATE_CHARS = 4000  # a prompt template is a sentence or two, not a document
EXAMPLE = "like 'Review: {text}'"


def template_problem(template, *, what: str = "template", allowed=None) -> str | None:
    """Why `template` is not a plain-placeholder template, or None when it is one.

    `allowed` (optional) lists the only names its placeholders may use.
    """
    if not isinstance(template, str):
        return f"The {what} must be text {EXAMPLE}, not {type(template).__name__}."
    if len(template) > MAX_TEMPLATE_CHARS:
        return (
            f"The {what} has {len(template):,} characters; at most {MAX_TEMPLATE_CHARS:,} are "
            "allowed. Shorten it."
        )
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        return (
            f"The {what} {_shown(template)} is malformed ({err}). Write column names in braces, "
            f"{EXAMPLE}, and double a brace to show it literally."
        )
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if spec or conversion or any(mark in field for mark in ".[]"):
            shown = "{" + field + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            return (
                f"The {what} uses {_shown(shown)}; only plain column names in braces are "
                f"allowed ({EXAMPLE}): no format specifications (':'), conversions ('!') or "
                "attribute and index access ('.', '[]')."
            )
        if allowed is not None and field not in allowed:
            names = ", ".join("{" + name + "}" for name in allowed)
            return f"The {what} uses {{{field}}}; it may only use {names}."
    return None


def template_names(template: str) -> list[str]:
    """The placeholder names of a template already checked by template_problem, in order."""
    parsed = string.Formatter().parse(template)
    return list(dict.fromkeys(field for _, field, _, _ in parsed if field is not None))


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")
