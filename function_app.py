"""entra-sync's Function App (Python v2 programming model).

This file only composes: settings are read and checked once (a missing or malformed setting stops
the app here with a message naming it), telemetry is sent to Application Insights where its
connection string is set (``shared.observe``), then every blueprint in ``functions/`` is
registered, and what start-up built is frozen out of the garbage collector's full passes
(``bootstrap.freeze_start_up``).
"""

import os

import azure.functions as func

from functions import BLUEPRINTS
from shared import bootstrap, observe

bootstrap.init()
observe.configure(os.environ)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in BLUEPRINTS:
    app.register_functions(blueprint)

bootstrap.freeze_start_up()
