"""The Celery application: three queues, ``default`` (ingest, labeling, reports: interactive work), ``render``
(background MIP cines, so an interactive task never waits behind them) and ``gpu`` (training, inference),
configured from Django settings (``CELERY_*``).

Workers are started with ``celery -A dla_web worker -Q default``, ``-Q render`` or ``-Q gpu --concurrency 1``. Task state lives in
``TaskRun`` rows, not in a result backend, so results are ignored.
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dla_web.settings")

app = Celery("dla_web")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=(Queue("default"), Queue("gpu"), Queue("render")),
    task_default_queue="default",
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
app.autodiscover_tasks()
