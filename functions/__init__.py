"""One blueprint per module; ``function_app.py`` registers every one listed here."""

from functions.graph_lifecycle import bp as graph_lifecycle_bp
from functions.graph_webhook import bp as graph_webhook_bp
from functions.health import bp as health_bp
from functions.subscriptions_renew import bp as subscriptions_renew_bp
from functions.sync_worker import bp as sync_worker_bp

BLUEPRINTS = [health_bp, graph_webhook_bp, graph_lifecycle_bp, sync_worker_bp, subscriptions_renew_bp]
