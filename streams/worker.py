"""Worker entry point: ``python -m streams.worker worker -l info`` (Faust's CLI).

The composition root: settings are read once, the app is built and the pipeline and the
diagnostic ping job are registered by name (no autodiscovery). ``main`` turns on JSON logs
(``DRIPDROP_LOG_FORMAT=json``) and the metrics endpoint (``DRIPDROP_METRICS_PORT``).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

# uvloop unless the operator chose a loop (FAUST_LOOP / -L): faust reads this when it is
# first imported, so it must be set before the imports below (docs/benchmarks.md).
os.environ.setdefault("FAUST_LOOP", "uvloop")

from streams import jsonlog, metrics  # noqa: E402
from streams.agents import ping  # noqa: E402
from streams.app import create_app  # noqa: E402
from streams.clock import clock_from  # noqa: E402
from streams.one_click import OneClickSource  # noqa: E402
from streams.pipeline import Pipeline  # noqa: E402
from streams.settings import Settings  # noqa: E402

settings = Settings()
app = create_app(settings)
ping.register(app, settings)
pipeline = Pipeline(app, settings, clock_from(settings))
# One-click unsubscribe links on opted-in sends (SPEC §13): the key by reference, as
# ``dripdrop web`` resolves it.
pipeline.processor.one_click = OneClickSource(settings)


def main() -> None:
    """Run the worker; when Faust returns (stopped, or crashed and torn down), the process
    ends with its status at once.

    After a crash, Faust (faust-streaming 0.15) can leave a mode ``ServiceThread`` running
    (the consumer's thread): the interpreter then waits for it forever at shutdown and the
    worker never exits, so a supervisor never restarts it (seen in
    ``test_pipeline_missing_changelog``: 1 run in 6 hung after "Reraising original
    exception"). Faust has stopped its services by then (tables closed); only that wait is
    skipped.
    """
    if settings.log_format == "json":
        app.conf.logging_config = jsonlog.logging_config()
    metrics.start(settings, app, pipeline)  # only when DRIPDROP_METRICS_PORT is set
    code = 1
    try:
        app.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # a crash Faust re-raised: say what it was, exit 1
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
