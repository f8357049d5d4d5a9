# Two entry points for users (see README): `make demo` and `make test`.
# Both create a virtual environment in .venv, install the pinned torch and the
# tools, and compile the extension (CUDA sources too when nvcc is found).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
BUILD_LOG := build/build.log
SOURCES := setup.py pyproject.toml $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')

.PHONY: install demo test test-full test-python test-cpp test-compat clean

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

# The test suite against another torch, Python or compiler (README "Tested
# with"):  make test-compat TORCH=2.15.0 [PYTHON=python3.12] [CC=clang-19 CXX=clang++-19]
# A venv of its own per torch and Python (.venv-compat-<torch>-py<X.Y>, kept
# for the next run), a copy of the source tree per compiler inside it (the
# build writes sparse_kernels/_C*.so in place: the tree's own binary, built for
# the pinned torch, stays untouched), a CPU-only build installed with pip
# against that torch (pip must keep it: a pin in pyproject.toml would replace
# it), then test-python's pytest command. PIP_CONSTRAINT=/dev/null lifts a
# machine-wide pip constraint on torch (this one caps it at the pinned
# release). PyPI's Linux torch wheels are CUDA builds: they import only with
# their nvidia-* libraries, so those are installed too (about 4 GB).
COMPAT_PY_VERSION = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
COMPAT_VENV = .venv-compat-$(TORCH)-py$(COMPAT_PY_VERSION)
# CC/CXX given on the command line or in the environment reach the build;
# make's own defaults (cc, g++) do not.
COMPAT_COMPILER_ENV = $(if $(filter environment command line,$(origin CC)),CC="$(CC)") \
	$(if $(filter environment command line,$(origin CXX)),CXX="$(CXX)")
COMPAT_CXX = $(if $(filter environment command line,$(origin CXX)),$(notdir $(CXX)),default)
COMPAT_TREE = $(COMPAT_VENV)/tree-$(COMPAT_CXX)

test-compat:
	@test -n "$(TORCH)" || { echo "usage: make test-compat TORCH=2.15.0 [PYTHON=python3.12] [CC=clang-19 CXX=clang++-19]"; exit 2; }
	@test -n "$(COMPAT_PY_VERSION)" || { echo "PYTHON=$(PYTHON) does not run"; exit 2; }
	@test -f $(COMPAT_VENV)/.deps-installed || { \
		echo "Installing torch==$(TORCH) and the tools into $(COMPAT_VENV) ..." && \
		$(PYTHON) -m venv $(COMPAT_VENV) && \
		PIP_CONSTRAINT=/dev/null $(COMPAT_VENV)/bin/pip install -qq "torch==$(TORCH)" \
			$$(grep -v -E '^[[:space:]]*(#|torch==|$$)' requirements.txt) && \
		touch $(COMPAT_VENV)/.deps-installed; }
	@rm -rf $(COMPAT_TREE) && mkdir -p $(COMPAT_TREE)
	@git ls-files --cached --others --exclude-standard -z \
		| tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -C $(COMPAT_TREE) -xf -
	@echo "Compiling the extension, CPU only, compiler: $(COMPAT_CXX) (log: $(COMPAT_TREE)/build.log) ..."
	@cd $(COMPAT_TREE) && PATH="$(CURDIR)/$(COMPAT_VENV)/bin:$$PATH" SPARSE_KERNELS_CPU_ONLY=1 $(COMPAT_COMPILER_ENV) \
		PIP_CONSTRAINT=/dev/null $(CURDIR)/$(COMPAT_VENV)/bin/pip install --no-build-isolation -v -e . > build.log 2>&1 \
		|| { tail -n 60 build.log; echo "build failed, full log in $(COMPAT_TREE)/build.log"; exit 1; }
	@# pip resolved sparse_kernels' torch requirement against the installed torch: it must not have replaced it.
	$(COMPAT_VENV)/bin/python -c "import sys, torch; v = torch.__version__.split('+')[0]; \
		print('torch', torch.__version__, 'python', sys.version.split()[0]); sys.exit(v != '$(TORCH)')"
	@# SPARSE_KERNELS_CPU_ONLY=1 for the tests too: test_build then expects no CUDA kernels.
	cd $(COMPAT_TREE) && SPARSE_KERNELS_CPU_ONLY=1 $(CURDIR)/$(COMPAT_VENV)/bin/python -m pytest -q --hypothesis-profile=ci

clean:
	rm -rf build $(VENV) sparse_kernels/_C*.so sparse_kernels/_build_meta.py *.egg-info
