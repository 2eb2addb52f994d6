"""Write the small TOML files provisioning makes (tomllib only reads)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def value(v: Any) -> str:
    """One TOML value: text, integer, float, boolean or a list of those."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # JSON string escapes are valid TOML basic-string escapes
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def document(sections: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """TOML text with one [section] per mapping entry; None values are left out."""
    lines = [f"# {line}" for line in header.splitlines()]
    for name, items in sections.items():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {value(v)}" for key, v in items.items() if v is not None)
    return "\n".join(lines) + "\n"
