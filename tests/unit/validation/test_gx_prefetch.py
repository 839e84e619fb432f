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


QUIET = """
import tqdm  # something imported tqdm before the suite (TQDM_DISABLE is read at import)
from validation import gx_suite
answers = [(f"{i:04d}.png", "serving_default", {"probs": [[0.1, 0.7, 0.2]]}) for i in range(6)]
checks = gx_suite.run("classification", answers, labels={0, 1, 2}, image_sizes={a[0]: (64, 64) for a in answers},
                      docs_dir=None)
assert checks and all(c["passed"] for c in checks), checks
print("ok", len(checks))
"""


def test_the_suite_prints_no_progress_bars_into_the_step_log():
    """Half of a validate task's log were great-expectations' "Calculating Metrics" bars."""
    env = {"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-c", QUIET], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0 and p.stdout.startswith("ok"), p.stderr[-3000:]
    assert "Calculating Metrics" not in p.stderr and "it/s]" not in p.stderr, p.stderr[-3000:]
