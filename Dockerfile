# One image for every process group on Fly (fly.toml [processes]): the web (gunicorn) and the
# workers (rq worker, stock and on-demand) run the same code and the same pinned libraries.

# --- build: install the pinned runtime requirements into a virtualenv -------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# Every pinned requirement ships a manylinux wheel: no compiler is needed, and
# --only-binary makes the build fail rather than quietly compile one in.
RUN /opt/venv/bin/pip install --only-binary=:all: -r /tmp/requirements.txt

# --- run: the virtualenv and the code, nothing else -------------------------------------
FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OFFLOAD_ENV=production
# Runtime files only, no compilers: the PDF reports' Unicode font (settings.REPORT_FONT).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin offload
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Owned by root, read-only to the app: a compromised job cannot rewrite the code.
COPY . /app
USER offload
EXPOSE 8080
# Exec form: gunicorn is the process Fly signals (SIGTERM, fly.toml kill_signal), not a shell.
# fly.toml's [processes] replace this CMD per group; run as is, the image serves the web.
CMD ["gunicorn", "app:app"]
