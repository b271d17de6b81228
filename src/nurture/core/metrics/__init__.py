"""The report's arithmetic: one module per section (funnel, money, velocity and trends, the sales side, steps), each
a dataclass with ``to_json()`` (JSON keys named for people) and ``tables()`` (what the table and CSV outputs print),
built from the counts storage returns (:mod:`nurture.core.metrics.facts`). Pure: the period and ``now`` are passed in.
"""
