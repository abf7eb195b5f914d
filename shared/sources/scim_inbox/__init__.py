"""The inbound SCIM 2.0 endpoint: a source that Entra provisioning pushes to.

Entra's provisioning service (a non-gallery enterprise application pointed at this endpoint) sends
creates, updates, disables, deletes and group memberships. The endpoint stores them
(:mod:`.storage` over :mod:`.rows`: Azure Table Storage, or memory in tests), enqueues the identities
each accepted change touches, and the store is the :class:`~shared.core.ports.Source` the worker
reads (:mod:`.source`), so the pipeline stays level-triggered.

The SCIM protocol itself is scim2-server's (:class:`scim2_server.handler.AsyncScimHandler` over
scim2-models, with the Entra-tolerant policies on); what is Entra's own is in :mod:`.schema`
(request normalisation, limits) and :mod:`.endpoint` (the bearer token, the caps, the enqueueing).
"""
