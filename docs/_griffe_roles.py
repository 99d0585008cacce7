"""Griffe extension: Sphinx roles in docstrings (:class:`X`) -> code spans that link when X is documented.

The code's docstrings use Sphinx roles (``:class:``, ``:func:``, ...); mkdocstrings renders Markdown, where
they would show as literal text. Each role becomes an optional cross-reference: a link when the object is on
an API page, plain code otherwise (no warning, so the strict build does not depend on what other packages
document).
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`<>]+?)`")


def _replace(match: re.Match[str], module: str) -> str:
    short, target = match.group(1), match.group(2).strip()
    title = target.rsplit(".", 1)[-1] if short else target
    # A bare name (:class:`RLHFPPO`) is looked up in the docstring's own module, as Sphinx does.
    identifier = target if "." in target else f"{module}.{target}"
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def _rewrite(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        module = obj.module.path
        obj.docstring.value = _ROLE.sub(lambda match: _replace(match, module), obj.docstring.value)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring griffe loads."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: object) -> None:
        """The top package's own docstring (``on_object`` only sees the objects below it)."""
        _rewrite(pkg)

    def on_object(self, *, obj: griffe.Object, **kwargs: object) -> None:
        """Every module, class, function and attribute below a package."""
        _rewrite(obj)
