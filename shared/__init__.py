"""entra-sync: keeps Auth0, SCIM 2.0 applications and Salesforce in step with Microsoft Entra ID."""

__version__ = "0.1.0"  # the package's version (pyproject.toml reads it from here)
