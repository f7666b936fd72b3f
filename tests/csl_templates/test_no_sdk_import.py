"""The core package never imports ``cerebras``: the SDK pins numpy 1.25 and Python 3.11, so only
generated deploy scripts (and the stub, when put on PYTHONPATH on purpose) may."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import plmr, simulator, meshgemm, waferllm, csl_templates
failed = []
for pkg in (plmr, simulator, meshgemm, waferllm, csl_templates):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if ".stub_sdk" not in m.name:
            try:
                importlib.import_module(m.name)
            except ImportError as exc:  # a module broken for another reason: it must not be cerebras
                assert "cerebras" not in str(exc), (m.name, exc)
                failed.append(m.name)
from waferllm.cli import main
import csl_templates.bundle, csl_templates.stub_runtime, waferllm.deploy_cli
bad = sorted(n for n in sys.modules if n == "cerebras" or n.startswith("cerebras."))
print(failed, file=sys.stderr)
print(bad)
"""


def test_importing_every_module_imports_no_cerebras_package():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
