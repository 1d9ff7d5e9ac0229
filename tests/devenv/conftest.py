from __future__ import annotations

import sys

from tests.support.procs import ROOT

# The runner is a package under scripts/ (run as `PYTHONPATH=scripts python -m devstack`).
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))
