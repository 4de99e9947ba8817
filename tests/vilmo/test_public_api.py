"""The library's public API (``vilmo.__all__``); its layering is in tests/test_layering.py."""

from __future__ import annotations

import vilmo


def test_public_api() -> None:
    assert sorted(vilmo.__all__) == sorted(name for name in vilmo.__all__
                                           if hasattr(vilmo, name))
    for name in ("Policy", "PolicyStore", "InstructionGenerator", "RelevanceGenerator",
                 "load_policy", "VALUES"):
        assert name in vilmo.__all__
