# Training image (train.py, train_distillation.py, extract_soft_labels.py).
# CPU by default. For NVIDIA GPUs build with a CUDA wheel variant, e.g.
#   docker build --build-arg TORCH_VARIANT=cu128 -t bird_classification_edge .
# (PyTorch's CUDA wheels carry the CUDA runtime; the host needs the NVIDIA driver and the
# NVIDIA container toolkit). BASE_IMAGE may be swapped for another Python 3.11 image.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_VARIANT=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app

# torch first, from the wheel index of the chosen variant; the pinned requirements then
# find torch==2.13.0 already installed.
COPY requirements.txt ./
RUN pip install "torch==2.13.0" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
    && pip install -r requirements.txt

# Code only: data, outputs, soft labels and caches are mounted at run time.
COPY . .

CMD ["python", "train.py"]
