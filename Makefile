# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data/synth
RUN ?= runs/demo
SEED ?= 0
# The demo: `centernet synth --preset demo` (5 distinct shapes from 32 px, light clutter) and the
# MobileNetV3-small CenterNet (PaddleDetection's structure, with the original CenterNet's light
# 64-channel head) at 192x192, trained from scratch with the short-run recipe (Adam 2e-3, one
# warm-up epoch, cosine): 16 epochs of 1,000 images, about 8 minutes on 2 CPU cores.
DEMO_MODEL ?= centernet_mbv3_small
DEMO_HEAD ?= 64
DEMO_SIZE ?= 192
DEMO_EPOCHS ?= 16
DEMO_LR ?= 2e-3
DEMO_TRAIN ?= 1000
DEMO_VAL ?= 200

.PHONY: install demo test test-slow test-paddle clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,onnx,tensorboard,serve]'
	touch $@

demo: install
	$(PY) -m centernet synth --preset demo --out $(DATA) --train $(DEMO_TRAIN) --val $(DEMO_VAL) --seed $(SEED)
	rm -rf $(RUN)
	$(PY) -m centernet train --data $(DATA) --model $(DEMO_MODEL) --head-planes $(DEMO_HEAD) \
		--input-size $(DEMO_SIZE) --no-eval-keep-res --epochs $(DEMO_EPOCHS) --eval-interval 4 \
		--batch-size 8 --lr $(DEMO_LR) --schedule cosine --warmup-epochs 1 --seed $(SEED) --run-dir $(RUN)
	$(PY) -m centernet eval --weights $(RUN)/best.pt --data $(DATA) --out $(RUN)/eval
	$(PY) -m centernet predict $(DATA)/val/images --weights $(RUN)/best.pt --out $(RUN)/predictions
	@echo "demo done: checkpoints, metrics.csv, losses.png and map.png in $(RUN);" \
		"COCO metrics in $(RUN)/eval/eval.json; drawn predictions in $(RUN)/predictions"

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

# Comparison tests against PaddleDetection (installs the reference environment .venv-paddle).
test-paddle: install
	bash scripts/setup_paddle_env.sh
	$(PY) -m pytest -q -m paddle

clean:
	rm -rf $(RUN) $(DATA)
