"""gunicorn entry point: ``gunicorn webapp.wsgi:app`` (config from ``$PINK_CONFIG``)."""

import logging

from webapp import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
app = create_app()
