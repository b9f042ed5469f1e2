# Set-up, tests, training and benchmarks. `make train` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
# Where pip would otherwise pick a CUDA build of torch (several GB), set TORCH_INDEX to a
# package index that serves CPU builds, e.g. `make test TORCH_INDEX=...` (see README).
TORCH_INDEX ?=
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
GENERATED := proto/asyncrl/v1/parameter_server_pb2.py proto/asyncrl/v1/parameter_server_pb2_grpc.py

.PHONY: all install train test proto lint bench bench-atari bench-learn bench-security bench-capacity bench-profile bench-shards clean

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),PIP_INDEX_URL=$(TORCH_INDEX)) $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev]'
	@if $(PY) -m pip list --format=freeze 2>/dev/null | grep -qi '^nvidia-'; then \
		echo "error: the venv holds nvidia-* packages (a CUDA build of torch); asyncrl needs the CPU build." >&2; \
		echo "Remove $(VENV) and run again with TORCH_INDEX set to an index serving CPU builds of torch $(TORCH_VERSION)." >&2; \
		exit 1; fi
	touch $@

install: $(VENV)/.installed | $(GENERATED)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

# Generated code is committed; `make proto` regenerates it after a .proto change (a test checks it is current).
$(GENERATED):
	$(MAKE) proto

proto: $(VENV)/.installed
	$(PY) proto/generate.py

lint: $(BUF)
	$(BUF) lint

train: install
	$(VENV)/bin/asyncrl train

test: install $(BUF)
	ASYNCRL_BUF=$(BUF) $(PY) -m pytest -q

bench: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/time_to_target.py

# The same benchmark on Pong (a few minutes on 2 cores; not part of `make test` or CI): agent steps/s and
# frames/s in-process and distributed, push/pull latency, bytes per update (fp32, fp16), and the mean
# return one worker x 4 envs reaches in 20,000 frames.
bench-atari: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/bench.py --env-id ALE/Pong-v5 --envs 4 --skip-train --seconds 20 --warmup 5 \
		--train-workers 1 --score-frames 20000

# Learning curves beside stable-baselines3 A2C, written to docs/results/ (Acrobot: a few minutes on 2 cores).
# Pong to +18 takes hours here: .venv/bin/python benchmarks/learning.py --env-id ALE/Pong-v5 --frames 20000000
# --sb3-frames 2000000 (see README, "Learning results").
bench-learn: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/learning.py --env-id CartPole-v1 --frames 500000
	$(PY) benchmarks/learning.py --env-id Acrobot-v1 --frames 500000

# What the bearer token and TLS cost on CartPole: push p50/p99 and updates/s against plaintext, in one run.
bench-security: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/security_cost.py

# What one server process sustains against N synthetic pushers (no envs), beside a raw gRPC echo of the same
# payloads in the same run: CartPole and Pong layouts, fp32 and fp16, N = 1, 2, 4, 8 (about 7 minutes on 2 cores).
bench-capacity: install
	$(PY) benchmarks/capacity.py

# Where a Pong push's server time goes: py-spy on a live server under one synthetic pusher (about a minute).
bench-profile: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/push_profile.py

# Updates/s of a server of one process and of 2 shards, N = 1, 2, 4 synthetic workers through the worker's own
# connection: Pong and CartPole layouts, fp32 (about 3 minutes on 2 cores).
bench-shards: install
	$(PY) benchmarks/shards.py

clean:
	rm -rf $(VENV) .tools runs build *.egg-info
