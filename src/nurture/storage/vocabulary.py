"""The values some columns take (who moved a lead, the statuses of enrollments, deliveries and the outbox, the kinds
of definition versions): plain constants, so that code that only needs these names imports no table or ORM."""

from __future__ import annotations

STAGE_ACTORS = ("rule", "api", "cli", "sales", "import", "system", "admin")
ENROLLMENT_STATUSES = ("active", "completed", "exited")
DELIVERY_STATUSES = ("claimed", "sent", "retry", "failed", "suppressed")
DELIVERY_CHANNELS = ("email", "webhook")
OUTBOX_STATUSES = ("pending", "sent", "failed")
DEFINITION_KINDS = ("campaign", "policy", "scoring", "sales")
