"""Every public library module declares ``__all__``, and every name in it exists."""

from __future__ import annotations

import importlib
import pkgutil

import kimagekit


def _public_modules() -> list[str]:
    """Every library module (packages' ``__init__`` hold only a docstring), not the CLI (the
    program, not the library) nor ``_private`` ones and ``__main__``."""
    names = ["kimagekit"]
    for info in pkgutil.walk_packages(kimagekit.__path__, "kimagekit."):
        parts = info.name.split(".")
        if info.ispkg or parts[1] == "cli" or any(p.startswith("_") for p in parts):
            continue
        names.append(info.name)
    return names


def test_every_public_module_defines_all_and_its_names_exist() -> None:
    modules = _public_modules()
    assert {"kimagekit.ima_log", "kimagekit.image", "kimagekit.devicetree",
            "kimagekit.keylime_policy", "kimagekit.sig.ima_sig"} <= set(modules)
    missing, dangling = [], []
    for name in modules:
        mod = importlib.import_module(name)
        exported = getattr(mod, "__all__", None)
        if exported is None:
            missing.append(name)
        dangling += [f"{name}.{n}" for n in exported or () if not hasattr(mod, n)]
    assert missing == []
    assert dangling == []
