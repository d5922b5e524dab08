"""Files ctiserver ships beside its code: the web pages, the example IVR flows, the
dialplans and the example configurations.

In the source tree (and an editable install) they sit at its top, beside the package.
A wheel carries a copy of them inside the package, in `ctiserver/shipped/` (setup.py
puts it there), because a wheel installs nothing outside its packages' folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

# What setup.py copies into the wheel, each relative to the top of the source tree.
SHIPPED: Final = ("web", "flows", "dialplans", "acd.example.toml", "wallboard.example.toml")

_PACKAGE: Final = Path(__file__).resolve().parent
IN_WHEEL: Final = _PACKAGE / "shipped"
IN_SOURCE: Final = _PACKAGE.parent


def shipped_path(relative: str) -> Path:
    """The shipped file or folder `relative` (e.g. "web", "dialplans/extensions.conf"):
    the wheel's copy when this package was installed from one, else the source tree's."""
    if Path(relative).parts[0] not in SHIPPED:
        raise ValueError(f"{relative!r} is not under a shipped file or folder {SHIPPED}")
    packaged = IN_WHEEL / relative
    return packaged if packaged.exists() else IN_SOURCE / relative
