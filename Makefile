# make train: set up, fetch Fashion-MNIST, train the default one-loss GAN (GPU config if CUDA, else CPU)
# make test:  set up and run the test suite
# make results: train every method's CPU config, score it, write docs/results.md and the README table (its
#   training took 110.5 minutes and its scoring 70.1 on a 2-core AMD EPYC, 2026-12-06, 50.1 with bf16 sampling
#   on 2026-12-07; ARGS=--train-only, then ARGS=--reuse, splits it; ARGS=--jobs 2 trains two runs at a time,
#   each on half the threads: 53.5 minutes, with fewer steps and worse denoisers, README "Results")
# make results DATA=cifar10: the same on CIFAR-10 (configs/cifar10_*_cpu.yaml, docs/results_cifar10.md) from
#   the JPEG zips in $(CIFAR10) (or torchvision's cifar-10-batches-py/ there)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
CIFAR10 ?= ../shared/datasets/cifar10-jpeg
DATA   ?= fashion_mnist
ARGS   ?=

.PHONY: setup data train test results clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Fashion-MNIST: the Debian package when apt is there, else torchvision's download into datasets/.
data: $(STAMP)
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ] || [ -d datasets/FashionMNIST/raw ]; then \
		echo "Fashion-MNIST found"; \
	elif command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y dataset-fashion-mnist 2>/dev/null || sudo -n apt-get install -y dataset-fashion-mnist; }; then \
		echo "Fashion-MNIST installed under $(FMNIST)"; \
	else \
		$(PY) -c "from torchvision.datasets import FashionMNIST; FashionMNIST('datasets', download=True)"; \
	fi

train: data
	$(PY) scripts/train.py --config $$($(PY) -c "import torch; print('configs/fashion_mnist_dcgan.yaml' \
		if torch.cuda.is_available() else 'configs/fashion_mnist_dcgan_cpu.yaml')") $(ARGS)

test: $(STAMP)
	$(PY) -m pytest

results: $(if $(filter cifar10,$(DATA)),$(STAMP),data)
	$(PY) scripts/results.py --data $(DATA) $(if $(filter cifar10,$(DATA)),--data-root $(CIFAR10)) $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
