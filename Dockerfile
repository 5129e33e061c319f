# Devex core: one image for the web process (default) and the RQ worker.
#   web:     docker run IMAGE                       (gunicorn wsgi:app on :8000)
#   worker:  docker run IMAGE rq worker -c devex.rq_config -w jobs.worker.DevexWorker \
#              --with-scheduler --url "$DEVEX_REDIS_URL" devex
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt constraints.txt ./
COPY runner/requirements.txt runner/requirements.txt
RUN pip install -r requirements.txt -c constraints.txt

COPY wsgi.py ./
COPY devex/ devex/
COPY devex_shared/ devex_shared/
COPY jobs/ jobs/
COPY runner/ runner/
COPY repl_templates/ repl_templates/

RUN groupadd --system --gid 10001 devex \
 && useradd --system --uid 10001 --gid devex --home-dir /tmp --no-create-home devex
USER 10001:10001

ENV HOME=/tmp
EXPOSE 8000
CMD ["gunicorn", "-c", "python:devex.gunicorn_conf", "wsgi:app", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", \
     "--worker-tmp-dir", "/tmp", "--access-logfile", "-"]
