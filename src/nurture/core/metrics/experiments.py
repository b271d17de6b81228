"""The report's experiment sections: each A/B step's variants measured on its goal, with the verdict and the recorded
winner (``ab_tests``), and each holdout group against the leads its campaign sent to, with the lift (``holdouts``).

The figures are computed by the application (:mod:`nurture.application.variant_decisions`,
:mod:`nurture.application.holdout_lift`) with :mod:`nurture.core.abtest` and :mod:`nurture.core.holdout`; these
classes give them the shape of every other section: JSON (a list, one object per step or campaign), flat tables
for the long CSV, the definitions in plain words, the verdicts as the summary, and the lines of the table output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nurture.core.holdout import MIN_GROUP
from nurture.core.metrics.tables import Column, Definition, Summary, Table, format_value


def _pct(value: float | None) -> str:
    return format_value(value, "rate")


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:g} h"


@dataclass
class AbTests:
    """Every A/B step that sent variants in the period (the JSON objects of ``ab_tests``, as the application built
    them: ``campaign``, ``step``, ``goal``, ``confidence``, ``min_sends``, ``variants``, ``leader``, ``comparisons``,
    ``more_sends_needed``, ``verdict``, ``significant``, ``winner``, ``sent_after_call``)."""

    tests: list[dict[str, Any]] = field(default_factory=list)

    key = "ab_tests"
    title = "A/B tests"

    def to_json(self) -> list[dict[str, Any]]:
        """One object per A/B step."""
        return self.tests

    def summary(self) -> Summary:
        """Each step's verdict; the note says whether a winner is recorded."""
        summary = Summary()
        for index, test in enumerate(self.tests):
            winner = test["winner"]
            note = (f"winner {winner['variant']} recorded {winner['decided_at'][:10]}" if winner is not None
                    else "no winner recorded")
            summary.add(f"{index}.verdict", f"{test['campaign']} / {test['step']}", test["verdict"], "text", note)
        return summary

    def tables(self) -> list[Table]:
        """The tests (goal, verdict, winner), the variants' rates and the leader's comparisons, flat for the CSV."""
        tests, variants, comparisons = [], [], []
        for test in self.tests:
            where = {"campaign": test["campaign"], "step": test["step"]}
            winner = test["winner"] or {}
            tests.append({**where, "goal": test["goal"], "confidence": test["confidence"],
                          "min_sends": test["min_sends"], "leader": test["leader"],
                          "more_sends_needed": test["more_sends_needed"], "significant": test["significant"],
                          "verdict": test["verdict"], "winner": winner.get("variant"),
                          "decided_at": winner.get("decided_at"), "sent_after_call": test["sent_after_call"]})
            variants += [{**where, **variant} for variant in test["variants"]]
            comparisons += [{**where, **comparison} for comparison in test["comparisons"]]
        return [
            Table("tests", "A/B steps and their verdicts",
                  [Column("campaign", "Campaign", "text"), Column("step", "Step", "text"),
                   Column("goal", "Goal", "text"), Column("confidence", "Confidence", "rate"),
                   Column("min_sends", "Min sends"), Column("leader", "Leader", "text"),
                   Column("more_sends_needed", "Sends needed"), Column("significant", "Significant", "text"),
                   Column("verdict", "Verdict", "text"), Column("winner", "Winner recorded", "text"),
                   Column("decided_at", "Called at", "text"), Column("sent_after_call", "Sent since")],
                  tests, items=("campaign", "step")),
            Table("variants", "Variants on the goal",
                  [Column("campaign", "Campaign", "text"), Column("step", "Step", "text"),
                   Column("variant", "Variant", "text"), Column("sends", "Sent"), Column("conversions", "Converted"),
                   Column("rate", "Rate", "rate")], variants, items=("campaign", "step", "variant")),
            Table("comparisons", "The leader against each other variant",
                  [Column("campaign", "Campaign", "text"), Column("step", "Step", "text"),
                   Column("variant", "Leader", "text"), Column("against", "Against", "text"),
                   Column("difference", "Difference", "points"), Column("low", "Interval low", "points"),
                   Column("high", "Interval high", "points"), Column("p_value", "p-value", "p_value"),
                   Column("probability_to_beat", "Probability to beat", "rate")],
                  comparisons, items=("campaign", "step", "variant", "against")),
        ]

    def definitions(self) -> list[Definition]:
        """What the test, the interval, the probability to beat and the call mean."""
        return [
            Definition("Goal and rate", "what a step's variants are compared on (clicks by default, opens, an event "
                       "or becoming an SQL within a window after the send); each lead counts once, in the variant it "
                       "was sent first; rate = leads that reached the goal ÷ leads sent the variant. With a window, "
                       "a send counts once its window is over"),
            Definition("Difference", "the leader's rate minus the other variant's, in percentage points"),
            Definition("Interval", "the range the true difference lies in at the test's confidence (Newcombe's, "
                       "from each rate's Wilson interval): when it does not include 0 the difference is real, not "
                       "chance"),
            Definition("p-value (two-proportion z-test)", "how often a difference at least this large would show if "
                       "both variants converted alike; below 1 - confidence (0.05 at 95%) the leader wins that "
                       "comparison. With three or more variants, each comparison is held to (1 - confidence) ÷ "
                       "(variants - 1), so the call as a whole keeps its confidence"),
            Definition("Probability to beat", "the chance that the leader's true rate is above the other's, given the "
                       "data (Beta-Binomial, uniform priors): a reading aid beside the test, not the rule of the call"),
            Definition("Verdict and winner", "a call needs every variant sent to min_sends leads and the leader to "
                       "win every comparison; a step with winner: has it recorded once by the worker, which then "
                       "sends the winner to every later lead. After a call the test is the emails sent before it; "
                       "'sent since' counts the winner's emails after it"),
        ]

    def lines(self) -> list[str]:
        """The table output: per step, the variants, the comparisons in points, the verdict and the winner."""
        if not self.tests:
            return ["none in this period"]
        lines = []
        for test in self.tests:
            lines.append(f"{test['campaign']} / {test['step']}: goal {test['goal']}, "
                         f"{test['confidence'] * 100:g}% confidence, at least {test['min_sends']} sends per variant")
            lines.append(f"  {'variant':10} {'sends':>7} {'conv.':>6} {'rate':>7}")
            for variant in test["variants"]:
                lines.append(f"  {variant['variant']:10} {variant['sends']:>7} {variant['conversions']:>6} "
                             f"{_pct(variant['rate']):>7}")
            for c in test["comparisons"]:
                lines.append(f"  {c['variant']} - {c['against']}: {c['difference'] * 100:+.1f} points "
                             f"({c['low'] * 100:+.1f} to {c['high'] * 100:+.1f}), p = {c['p_value']:.3f}, "
                             f"P({c['variant']} better) = {c['probability_to_beat'] * 100:.1f}%")
            lines.append(f"  verdict: {test['verdict']}")
            winner = test["winner"]
            if winner is not None:
                lines.append(f"  winner recorded: {winner['variant']} at {winner['decided_at']}, sent to every later "
                             f"lead ({test['sent_after_call']} since)")
        return lines


_GROUPS = (("sent", "sent"), ("held_out", "held out"))


@dataclass
class Holdouts:
    """Every campaign with a holdout group (the JSON objects of ``holdouts``: ``campaign``, ``holdout``, ``sent``,
    ``held_out``, ``lift``, ``low``, ``high``, ``p_value``, ``confidence``, ``verdict``)."""

    campaigns: list[dict[str, Any]] = field(default_factory=list)

    key = "holdouts"
    title = "Holdouts"

    def to_json(self) -> list[dict[str, Any]]:
        """One object per campaign."""
        return self.campaigns

    def summary(self) -> Summary:
        """Each campaign's verdict; the note gives the lift."""
        summary = Summary()
        for index, h in enumerate(self.campaigns):
            note = "no lift measured" if h["lift"] is None else f"lift {format_value(h['lift'], 'points')}"
            summary.add(f"{index}.verdict", h["campaign"], h["verdict"], "text", note)
        return summary

    def tables(self) -> list[Table]:
        """The lift per campaign, and each group's figures, flat for the CSV."""
        lifts = [{key: h[key] for key in ("campaign", "holdout", "lift", "low", "high", "p_value", "confidence",
                                          "verdict")} for h in self.campaigns]
        groups = [{"campaign": h["campaign"], "group": name, **h[key]} for h in self.campaigns for key, name in _GROUPS]
        return [
            Table("lift", "Lift of each campaign (sent minus held out)",
                  [Column("campaign", "Campaign", "text"), Column("holdout", "Holdout", "rate"),
                   Column("lift", "Lift", "points"), Column("low", "Interval low", "points"),
                   Column("high", "Interval high", "points"), Column("p_value", "p-value", "p_value"),
                   Column("confidence", "Confidence", "rate"), Column("verdict", "Verdict", "text")],
                  lifts, items=("campaign",)),
            Table("groups", "Sent and held out",
                  [Column("campaign", "Campaign", "text"), Column("group", "Group", "text"),
                   Column("leads", "Leads"), Column("sql", "SQLs"), Column("rate", "MQL→SQL", "rate"),
                   Column("median_hours_to_sql", "Median to SQL", "hours")], groups, items=("campaign", "group")),
        ]

    def definitions(self) -> list[Definition]:
        """What the groups, the conversion and the lift mean."""
        return [
            Definition("Sent and held out", "the leads that entered the campaign in the period, each once (its first "
                       "entry), in the group of that entry: held out (about the campaign's holdout: share, chosen "
                       "by a hash) are enrolled and walk the campaign but are sent nothing"),
            Definition("MQL→SQL conversion", "leads of the group that became an SQL at or after entering, before the "
                       "end of the period ÷ leads of the group; median to SQL: hours from entering to SQL"),
            Definition("Lift", "the sent group's conversion minus the held-out group's, in percentage points: what "
                       "the campaign's emails cause, since the two groups differ only in being sent to"),
            Definition("Interval and p-value", "the lift's 95% interval (Newcombe's) and the two-proportion z-test's "
                       "p-value: the lift is measurable when the p-value is below 0.05 (the interval then excludes "
                       f"0); with fewer than {MIN_GROUP} leads in a group the verdict is 'not enough data'"),
        ]

    def lines(self) -> list[str]:
        """The table output: per campaign, both groups and the verdict."""
        if not self.campaigns:
            return ["none in this period"]
        lines = []
        for h in self.campaigns:
            share = "" if h["holdout"] is None else f" (holdout {h['holdout'] * 100:g}%)"
            lines.append(f"{h['campaign']}{share}")
            lines.append(f"  {'group':10} {'leads':>7} {'SQLs':>6} {'MQL→SQL':>8} {'median to SQL':>14}")
            for key, name in _GROUPS:
                group = h[key]
                lines.append(f"  {name:10} {group['leads']:>7} {group['sql']:>6} {_pct(group['rate']):>8} "
                             f"{_hours(group['median_hours_to_sql']):>14}")
            lines.append(f"  verdict: {h['verdict']}")
        return lines
