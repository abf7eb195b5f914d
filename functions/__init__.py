"""One blueprint per module; ``function_app.py`` registers every one listed here."""

from functions.alerts_outbox import bp as alerts_outbox_bp
from functions.delta_sync import bp as delta_sync_bp
from functions.graph_lifecycle import bp as graph_lifecycle_bp
from functions.graph_webhook import bp as graph_webhook_bp
from functions.health import bp as health_bp
from functions.reconcile import bp as reconcile_bp
from functions.risk_alert import bp as risk_alert_bp
from functions.risk_monitor import bp as risk_monitor_bp
from functions.scim_inbox import bp as scim_inbox_bp
from functions.subscriptions_renew import bp as subscriptions_renew_bp
from functions.sync_lane import bp as sync_lane_bp
from functions.sync_worker import bp as sync_worker_bp
from functions.telemetry_probe import bp as telemetry_probe_bp

BLUEPRINTS = [
    health_bp,
    graph_webhook_bp,
    graph_lifecycle_bp,
    sync_worker_bp,
    sync_lane_bp,
    subscriptions_renew_bp,
    delta_sync_bp,
    reconcile_bp,
    risk_monitor_bp,
    risk_alert_bp,
    scim_inbox_bp,
    telemetry_probe_bp,
    alerts_outbox_bp,
]
