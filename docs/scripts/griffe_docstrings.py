"""A griffe extension that lets mkdocstrings render peftref's plain-text docstrings as Markdown.

peftref's docstrings are written for ``help()`` and the source: doctest examples (``>>>`` lines and their output) would
render as nested block quotes, and Sphinx roles such as ``:func:`name``` as literal text. This turns each run of doctest
lines into a ```pycon block and each role into inline code. Wired in mkdocs.yml under the python handler's ``extensions``.
"""

from __future__ import annotations

import re

import griffe

SPHINX_ROLE = re.compile(r":(?:func|data|class|mod|meth|attr|obj):`~?([^`]+)`")


def to_markdown(docstring: str) -> str:
    """Fence doctest examples as pycon and replace Sphinx roles by inline code."""
    out: list[str] = []
    in_example = False
    for line in docstring.splitlines():
        if not in_example and line.lstrip().startswith(">>>"):
            out.append("```pycon")
            in_example = True
        elif in_example and not line.strip():
            out.append("```")
            in_example = False
        out.append(line)
    if in_example:
        out.append("```")
    return SPHINX_ROLE.sub(r"`\1`", "\n".join(out))


class PlainDocstrings(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
