"""The worker: the dispatcher that sends what is due, the periodic jobs, and the APScheduler wiring of ``nurture run``."""
