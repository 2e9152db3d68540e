# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip warns once per configured local index that lacks a package: noise, not news.
QUIET_PIP := 2>&1 | { grep -v 'is ignored: it is neither' || true; }
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

# Every ROS graph this Makefile starts stays on this host: shared memory + UDPv4 on 127.0.0.1 only,
# discovery limited to localhost, a fresh domain id per invocation.
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_loopback.xml
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp
export ROS_DOMAIN_ID ?= $(shell python3 -c 'import random; print(random.randint(1, 101))')
export PYTHONUNBUFFERED := 1
# OpenMP threads that sleep instead of spinning: on a small shared machine (2 cores, a node process
# beside a training process) spinning threads made training steps 5-7x slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup setup-jazzy test test-ros-jazzy test-all demo lint bench clean

setup: $(VENV)/.setup-done

# torch is pinned and installed first so that nothing later resolves it to a CUDA build.
$(VENV)/.setup-done: setup.py package.xml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel $(QUIET_PIP)
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(QUIET_PIP)
	$(PY) -m pip install -q -e '.[ros,onnx,train,test]' $(QUIET_PIP)
	touch $@

test: setup
	$(PY) -m pytest test

# the ROS test tier again on Jazzy (ros-jazzy-* wheels, Fast DDS 2.x) in .venv-jazzy
setup-jazzy:
	bash .ci/jazzy.sh --setup-only

test-ros-jazzy:
	bash .ci/jazzy.sh

test-all: setup
	$(PY) -m pytest test -m ''

# scarce labels -> teacher -> pseudo-labels -> student vs baseline -> bag replay through the node;
# `make demo DEMO_ARGS=--tiny` is the toy-sized run of test/ros/test_demo.py; DEMO_ARGS=--docs
# also writes docs/results/demo.md and docs/img/demo_montage.png
DEMO_ARGS ?=
demo: setup
	ROS_LOG_DIR=$(CURDIR)/demo_out/ros_log $(PY) scripts/demo.py --out demo_out $(DEMO_ARGS)

bench: setup
	ROS_LOG_DIR=$(CURDIR)/bench/results/ros_log $(PY) -m bench

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf demo_out runs build install log .pytest_cache
