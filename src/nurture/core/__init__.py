"""The pure core: campaign timing, send windows, the step engine, scoring and promotion rules.

Nothing here reads the clock, the database or the network: the time and the facts are passed in.
"""
