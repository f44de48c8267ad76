"""What a reference may look like as text: no control characters, Hub ids and revisions in their shapes."""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from gpuq.common.errors import InvalidInput

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
HUB_ID = re.compile(rf"^{_PART}(/{_PART})?$")


# Unicode's Cc category is exactly C0, DEL and C1; one regex scan instead of a category lookup per character
# (every reference of every submit goes through here, several times).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def control_char(value: str) -> str | None:
    """The first control character (C0, DEL or C1) in ``value`` as ``U+XXXX``, or None."""
    found = _CONTROL.search(value)
    return f"U+{ord(found.group()):04X}" if found else None


def check_chars(value: str, field: str) -> str:
    """``value`` unchanged; 422 naming ``field`` when it holds a control character (NUL included).

    A NUL would otherwise reach the filesystem calls (``embedded null byte``, a 500), and other controls
    make names that look alike in logs and listings but differ on disk.
    """
    bad = control_char(value)
    if bad is not None:
        raise InvalidInput(f"{field}: control character {bad} is not allowed in a reference", field=field)
    return value


def is_hub_id(ref: str) -> bool:
    """True when ``ref`` has the shape of a Hub repo id: ``name`` or ``owner/name``, no ``..``."""
    return bool(HUB_ID.match(ref)) and ".." not in ref


_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


def check_revision(value: str | None, field: str) -> str | None:
    """``value`` unchanged when it is a revision's shape (or None); 422 naming ``field`` otherwise."""
    if value is not None and (not _REVISION.match(value) or ".." in value):
        raise InvalidInput(f"{field}: not a branch, tag or commit sha", field=field)
    return value


def _no_dotdot(value: str) -> str:
    # Git refuses ".." in ref names; the HF cache would join it into a path under refs/.
    if ".." in value:
        raise ValueError("a revision may not contain '..'")
    return value


def _hub_shaped(value: str) -> str:
    if ".." in value:
        raise ValueError("a Hub repo id may not contain '..'")
    return value


# A branch, tag or commit sha on the Hub.
Revision = Annotated[str, Field(pattern=_REVISION.pattern), AfterValidator(_no_dotdot)]
# ``name`` or ``owner/name`` on the Hub (dataset ids, adapter repos).
HubId = Annotated[str, Field(pattern=HUB_ID.pattern), AfterValidator(_hub_shaped)]
