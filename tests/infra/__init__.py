"""Static checks of the Azure deployment (infra/, azure.yaml, host.json): offline, no Bicep compiler."""
