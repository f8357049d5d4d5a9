# Two entry points for users (see README): `make demo` and `make test`.
# Both create a virtual environment in .venv, install the pinned torch and the
# tools, and compile the extension (CUDA sources too when nvcc is found).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
BUILD_LOG := build/build.log
SOURCES := setup.py pyproject.toml $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')

.PHONY: install demo test test-full test-python test-cpp clean

$(VENV)/.deps-installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -r requirements.txt
	touch $@

# --no-build-isolation: build against the torch installed above instead of
# downloading another copy into a throwaway environment.
$(VENV)/.extension-built: $(VENV)/.deps-installed $(SOURCES)
	@mkdir -p build
	@echo "Compiling the extension (log: $(BUILD_LOG)) ..."
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PIP) install --no-build-isolation --no-deps -v -e . > $(BUILD_LOG) 2>&1 \
		|| (tail -n 60 $(BUILD_LOG); echo "build failed, full log in $(BUILD_LOG)"; exit 1)
	@grep -m1 "sparse_kernels: CUDA kernels" $(BUILD_LOG) | sed 's/^ *//'
	@echo "nvcc compilations in the build log: $$(grep -c 'bin/nvcc ' $(BUILD_LOG))"
	@# The ptxas resource report (-Xptxas -v) of the kernels compiled: no local memory.
	@if grep -q "sparse_kernels: CUDA kernels ON" $(BUILD_LOG); then \
		$(PY) tests/emu/ptxas_report.py --allow-empty $(BUILD_LOG); fi
	touch $@

install: $(VENV)/.extension-built

demo: install
	$(VENV)/bin/sparse-rnn demo

# --hypothesis-profile=ci (tests/conftest.py): the property tests draw the
# same examples on every run, so a CI result depends on the code only.
test-python: install
	$(PY) -m pytest -q --hypothesis-profile=ci

# The same CPU kernels built as a C++ library against libtorch, with ctest.
test-cpp: install
	$(VENV)/bin/cmake -S . -B build/cmake -G Ninja -DCMAKE_MAKE_PROGRAM=$(CURDIR)/$(VENV)/bin/ninja \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')" \
		-DPython3_EXECUTABLE=$(CURDIR)/$(PY) > build/cmake-configure.log 2>&1 \
		|| (cat build/cmake-configure.log; exit 1)
	$(VENV)/bin/cmake --build build/cmake -j2
	$(VENV)/bin/ctest --test-dir build/cmake --output-on-failure

test: test-python test-cpp

# Also the heavy tests (@pytest.mark.slow), which `make test` samples.
test-full:
	SPARSE_KERNELS_RUN_SLOW=1 $(MAKE) test

clean:
	rm -rf build $(VENV) sparse_kernels/_C*.so sparse_kernels/_build_meta.py *.egg-info
