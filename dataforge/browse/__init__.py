"""The sample browser (``dataforge browse``): a local web app over one run's shards, and labels.

* :mod:`~dataforge.browse.labels` -- human labels (good / bad) as small Parquet files under
  ``<run>/labels/``, read as one table (the warehouse's ``labels`` view, the classifier's
  ``--labels RUN`` source);
* :mod:`~dataforge.browse.queries` -- the browser's data: one DuckDB table of every sample of
  the run (the final stage's rows and every dropped row), its filters, facets, pages, a sample's
  whole story and two runs side by side;
* :mod:`~dataforge.browse.server` -- the FastAPI app that serves the page (``static/``) and the
  JSON the page asks for, on 127.0.0.1;
* :mod:`~dataforge.browse.chromium` -- headless Chromium over the DevTools protocol, for the UI
  test and the docs' screenshot.

Nothing here writes to a run but the label files. This package imports nothing at import time,
so the warehouse can use its labels without pulling in the web server.
"""
