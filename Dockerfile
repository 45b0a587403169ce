# IA3 Studio as a Hugging Face Docker Space or a server image (README: "Deploy").
# The steps are the README's "Install by hand"; tests/test_deploy_recipe.py runs the same
# steps in a fresh virtual environment (no Docker engine runs on the development machines).
FROM python:3.11-slim

# PyPI's Linux torch wheel is the CUDA build: right on a GPU Space or server, and it also runs
# on a CPU. For a smaller CPU-only image:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
ARG TORCH_INDEX=https://pypi.org/simple

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IA3_DATA_DIR=/data \
    HF_HOME=/data/huggingface \
    PATH=/home/user/.venv/bin:$PATH

# Spaces run the image as uid 1000 and mount persistent storage at /data.
RUN useradd --create-home --uid 1000 user && mkdir -p /data && chown user:user /data
USER user
WORKDIR /home/user/app
COPY --chown=user:user . .

RUN python -m venv /home/user/.venv \
 && pip install --index-url "$TORCH_INDEX" "torch==2.13.0" \
 && pip install -e ".[demo]"

EXPOSE 7860
# Listening on 0.0.0.0 needs an access mode: Hugging Face sign-in on a Space (hf_oauth: true
# in the README front matter) or IA3_USERS elsewhere; without one the studio refuses to start.
CMD ["ia3", "studio", "--host", "0.0.0.0", "--port", "7860"]
