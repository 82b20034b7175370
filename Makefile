# Two commands on a fresh machine:  `make run` (install + open the app on the sample scan)
# and `make test` (install + run the whole test suite; what .ci/run calls).
#
# torch is installed first and pinned, so pip never resolves an unpinned torch to a multi-GB CUDA build.
# GPU users: make run TORCH_SPEC=torch==2.13.0 TORCH_INDEX="--index-url <CUDA wheel index from pytorch.org>"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
SAMPLE ?= sample_scans/brain_tumour_mri.nii.gz
PYTEST_ARGS ?=

.PHONY: run install install-test system-deps test bench package package-smoke clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e .

run: install
	$(BIN)/seg-app $(SAMPLE)

system-deps:
	bash scripts/install_system_deps.sh

install-test: $(BIN)/python system-deps
	$(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
# torch named again: the test extra's nnunetv2 -> timm -> torchvision would otherwise move torch to a newer (CUDA) build
	$(BIN)/python -m pip install -q -e ".[test]" "$(TORCH_SPEC)"

test: install-test
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python benchmarks/bench_io.py
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_train.py
	QT_QPA_PLATFORM=offscreen $(BIN)/python benchmarks/bench_gui.py
	$(BIN)/python benchmarks/bench_generalisation.py

# Standalone installer (docs/PACKAGING.md): PyInstaller bundle dist/seg-app/ + .deb + .tar.gz, then the
# smoke test of the frozen app (predict on the samples, screenshot, .deb launcher, startup time).
package: install
	$(BIN)/python -m pip install -q -e ".[package]"
	$(BIN)/python packaging/build.py $(PACKAGE_ARGS)

package-smoke: package
	PYTHON=$(BIN)/python bash scripts/package_smoke.sh

clean-venv:
	rm -rf $(VENV)
