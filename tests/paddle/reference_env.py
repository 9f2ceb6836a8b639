"""The paddle reference environment of the comparison tests: where it is, and running its script.

``benchmarks/paddle_reference.py`` (and ``paddle_train_reference.py``) run under ``.venv-paddle``'s Python in a separate process (paddle
and torch never share one); ``scripts/setup_paddle_env.sh`` makes that venv.
"""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PADDLE_PYTHON = ROOT / ".venv-paddle" / "bin" / "python"
BENCHMARKS = ROOT / "benchmarks"
MODELS = ["centernet_dla34", "centernet_r50", "centernet_mbv1", "centernet_mbv3_small",
          "centernet_mbv3_large", "centernet_shufflenetv2"]


def run_reference(*args, script: str = "paddle_reference.py") -> None:
    """Run ``benchmarks/<script>`` with ``args`` under the reference venv's Python; skips the test
    when that venv is absent."""
    if not PADDLE_PYTHON.exists():
        pytest.skip(f"no paddle reference env at {PADDLE_PYTHON} (run scripts/setup_paddle_env.sh)")
    run = subprocess.run([str(PADDLE_PYTHON), str(BENCHMARKS / script), *map(str, args)], capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, f"paddle reference failed:\n{run.stdout}\n{run.stderr[-3000:]}"
