"""great-expectations is imported in a background thread while the temporary server starts
(validation/gx_suite.py prefetch): a fresh interpreter, as `tfs-release validate` is."""
import subprocess
import sys

from tests.conftest import ROOT

CODE = """
import sys, threading
from validation import gx_suite
assert "great_expectations" not in sys.modules
gx_suite.prefetch()
t = gx_suite._prefetch
assert t is not None and t.daemon and t.name == "gx-import"
gx_suite.prefetch()                       # idempotent: still the one thread
assert gx_suite._prefetch is t
t.join(120)
assert not t.is_alive() and "great_expectations" in sys.modules
import great_expectations as gx           # the suite's own import then costs nothing
print("ok", gx.__version__)
"""


def test_prefetch_imports_great_expectations_once_in_a_background_thread():
    p = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=180,
                       env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and p.stdout.startswith("ok"), p.stderr[-2000:]
