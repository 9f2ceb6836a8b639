#!/usr/bin/env bash
# Build the PaddleDetection reference environment used by benchmarks/paddle_*.py and tests/paddle/.
# It is a separate venv (no torch in it) so Paddle's and PyTorch's wheels never meet.
# Idempotent: re-running only installs what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PADDLE_VENV:-$ROOT/.venv-paddle}"
PYTHON="${PYTHON:-python3.11}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi

if "$VENV/bin/python" -c "import paddle, ppdet, sklearn" 2>/dev/null; then
    echo "paddle reference env ready: $VENV"
    exit 0
fi

"$VENV/bin/python" -m pip install --quiet --upgrade pip
# paddledet 2.6.0 needs numpy<1.24; scikit-learn 1.3.2 is the newest that works with numpy 1.23.5.
"$VENV/bin/python" -m pip install --quiet \
    "paddlepaddle==3.3.1" "paddledet==2.6.0" "numpy==1.23.5" "scikit-learn==1.3.2"
"$VENV/bin/python" -c "import paddle, ppdet; print('paddle', paddle.__version__, 'ppdet ok')"
echo "paddle reference env ready: $VENV"
