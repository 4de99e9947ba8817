"""Issue 16: a gateway whose models all take the direct path never imports LiteLLM (its import
costs about 140 MB of RSS and 5 s of start-up). The Router's extra_body hook
(``proxy.operator_body``) was imported at ``proxy.upstream``'s top and brought LiteLLM in with
it: the no-policy gateway's peak RSS went from 212 to 350 MB in ``bench/compare_litellm.py``."""

from __future__ import annotations

import subprocess
import sys

IMPORT_THE_GATEWAY = """
import sys
import proxy.app, proxy.services, proxy.upstream, proxy.direct
print(sorted(m for m in ("litellm", "openai") if m in sys.modules))
"""


def test_importing_the_gateway_does_not_import_litellm() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_THE_GATEWAY], check=True,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]
