"""One blueprint per module; ``function_app.py`` registers every one listed here."""

from functions.health import bp as health_bp

BLUEPRINTS = [health_bp]
