"""The use cases: each reads through storage, asks the core, writes through storage and queues its side effects."""
