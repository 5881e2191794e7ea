"""Hand-written JSON Lines sets (the retrieval questions, the routing units) read as pydantic rows.

One reader so every such set fails alike: a bad line is a ``ConfigError`` naming the file and line,
the message a person fixing the file by hand needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from memory_pipeline.errors import ConfigError

Row = TypeVar("Row", bound=BaseModel)


def read_rows(
    path: Path,
    model: type[Row],
    *,
    what: str,
    overrides: Callable[[int], dict[str, Any]] | None = None,
) -> list[Row]:
    """Each non-blank line of ``path`` as a ``model``; ``overrides(line_number)`` sets fields the file does not.

    ``what`` names one row in the errors ("question", "routing unit").
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} set ({exc.strerror or exc})") from exc
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(model.model_validate({**json.loads(line), **(overrides(number) if overrides else {})}))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(f"{path}:{number}: not a valid {what}: {exc}") from exc
    return rows
