"""Table, Queue and Blob Storage clients from settings (a connection string or the
managed identity).
"""

from __future__ import annotations

from typing import Any

from azure.data.tables.aio import TableServiceClient
from azure.identity.aio import ManagedIdentityCredential
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from shared.settings import Settings


def _storage_credential(settings: Settings) -> Any:
    client_id = settings.storage.client_id
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def table_service(settings: Settings) -> TableServiceClient:
    storage = settings.storage
    if storage.connection_string is not None:
        return TableServiceClient.from_connection_string(storage.connection_string.reveal())
    assert storage.table_service_uri is not None
    return TableServiceClient(endpoint=storage.table_service_uri, credential=_storage_credential(settings))


def blob_service(settings: Settings) -> BlobServiceClient:
    storage = settings.storage
    if storage.connection_string is not None:
        return BlobServiceClient.from_connection_string(storage.connection_string.reveal())
    if storage.blob_service_uri is None:
        raise ValueError("no blob endpoint: set AzureWebJobsStorage__blobServiceUri or __accountName")
    return BlobServiceClient(account_url=storage.blob_service_uri, credential=_storage_credential(settings))


def queue_service(settings: Settings) -> QueueServiceClient:
    storage = settings.storage
    if storage.connection_string is not None:
        return QueueServiceClient.from_connection_string(storage.connection_string.reveal())
    assert storage.queue_service_uri is not None
    return QueueServiceClient(account_url=storage.queue_service_uri, credential=_storage_credential(settings))
