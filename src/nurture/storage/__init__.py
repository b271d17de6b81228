"""Storage: the only place that runs queries. SQLite by default, PostgreSQL to scale out, one code path.

- ``database``: engines, transactions, UTC timestamps; ``dialect``: every SQLite/PostgreSQL difference
- ``models``: the tables; ``tables``: their Core aliases; ``rows``: a lead row as the core's LeadView
- ``migrate``: schema upgrades (Alembic, driven from code) and the check that the schema is current
- ``leads``: writing, finding and summarizing one lead; ``lead_rows``: leads in bulk (the CSV import)
- ``feedback_rows``: what a sales decision reads and writes
- ``enrollments``, ``schedule``: entering campaigns; the dispatcher's claims and decisions
- ``event_bulk`` (and ``event_bulk_sqlite``), ``events``, ``lead_state``, ``codec``: what recording a batch of events
  reads and writes; ``scores``, ``promotions``, ``lookups``: scores, promotions and deliveries looked up
- ``outbox``, ``reports``, ``secrets``: notifications to deliver, metrics, the signing secret

Import the module you need (``from nurture.storage import schedule``): the package imports nothing itself, so a
command that does not touch the database (``nurture check``) does not pay for SQLAlchemy and Alembic.
"""
