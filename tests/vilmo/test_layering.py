"""vilmo is a library of its own: importing it loads no gateway, web framework or torch."""

from __future__ import annotations

import subprocess
import sys

import vilmo


def test_import_vilmo_loads_no_proxy_or_web_framework() -> None:
    code = ("import sys, vilmo, vilmo.cli; "
            "bad = [m for m in ('proxy', 'fastapi', 'starlette', 'litellm', 'torch') "
            "if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


def test_public_api() -> None:
    assert sorted(vilmo.__all__) == sorted(name for name in vilmo.__all__
                                           if hasattr(vilmo, name))
    for name in ("Policy", "PolicyStore", "InstructionGenerator", "RelevanceGenerator",
                 "load_policy", "VALUES"):
        assert name in vilmo.__all__
