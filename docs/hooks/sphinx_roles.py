"""A griffe extension for the API reference: Sphinx roles in docstrings become links.

locksmith's docstrings name other objects with Sphinx roles (``:meth:`Lock.acquire```,
``:class:`~locksmith.Lease```), which read well in source and in ``help()``. mkdocstrings
renders Markdown, so this extension rewrites each role before rendering: a public locksmith
object becomes a cross-reference to its entry in the reference (``[`Lock.acquire`][locksmith.Lock.acquire]``);
anything else (the standard library, a private helper, a bare attribute name) becomes code.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:meth|class|func|attr|data|exc|mod|obj):`(~?)([^`]+)`")
#: The public namespaces, in the order a bare name is looked up in.
_NAMESPACES = ("locksmith", "locksmith.aio", "locksmith.testing")


def _target(name: str) -> str | None:
    """The reference id of ``name`` if it is a public, documented locksmith object."""
    candidates = [name] if name.startswith("locksmith") else []
    candidates += [f"{ns}.{name}" for ns in _NAMESPACES]
    for dotted in candidates:
        parts = dotted.split(".")
        for split in range(len(parts), 0, -1):
            module_name = ".".join(parts[:split])
            try:
                obj: Any = importlib.import_module(module_name)
            except ImportError:
                continue
            if module_name not in _NAMESPACES:
                break  # a private module: not in the reference
            public = getattr(obj, "__all__", ())
            rest = parts[split:]
            if not rest or rest[0] not in public:
                break
            for attr in rest:
                obj = getattr(obj, attr, None)
                if obj is None or attr.startswith("_"):
                    break
            else:
                if inspect.isclass(obj) or callable(obj) or isinstance(obj, property):
                    return dotted
            break
    return None


def _replace(match: re.Match[str]) -> str:
    short, name = match.group(1) == "~", match.group(2).strip()
    shown = name.rsplit(".", 1)[-1] if short else name
    target = _target(name)
    return f"[`{shown}`][{target}]" if target else f"`{shown}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring into Markdown links or code."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Called by griffe for each object it loads."""
        del kwargs
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = _ROLE.sub(_replace, obj.docstring.value)
