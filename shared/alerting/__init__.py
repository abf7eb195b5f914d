"""Where findings, alerts and events go: the mapping's ``alerts:`` section (:mod:`.config`,
:mod:`.check`), the channels that carry an alert (:mod:`.cards` renders, :mod:`.channels` sends),
the routing and digest that pick channels and keep a storm to one message (:mod:`.router`), the
tickets that reconciliation findings open, update and close (:mod:`.tickets`), and the feed of
effective changes as CloudEvents (:mod:`.feed`)."""
