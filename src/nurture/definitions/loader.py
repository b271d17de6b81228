"""Load and validate the campaigns folder: every problem found, each as ``path:line: message``."""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from nurture.definitions.campaign import END, Campaign, Step, step_rule_problems
from nurture.definitions.conditions import Condition
from nurture.definitions.policy import POLICY_FILE, RESERVED_FILES, Policy
from nurture.definitions.yamlsource import Loc, YamlDocument, content_hash, load_yaml
from nurture.errors import DefinitionError, InvalidInput, Problem

M = TypeVar("M", bound=BaseModel)


@dataclass
class Catalog:
    """Everything loaded from the campaigns folder."""

    campaigns: dict[str, Campaign] = field(default_factory=dict)
    documents: dict[str, YamlDocument] = field(default_factory=dict)  # by campaign id
    policy: Policy = field(default_factory=Policy)
    policy_document: YamlDocument | None = None
    problems: list[Problem] = field(default_factory=list)
    _fingerprints: dict[str, str] = field(default_factory=dict, repr=False)
    _versions: dict[str, str] = field(default_factory=dict, repr=False)

    def fingerprint(self, campaign_id: str) -> str:
        """The campaign's content hash (computed once: campaigns do not change while loaded)."""
        found = self._fingerprints.get(campaign_id)
        if found is None:
            found = self._fingerprints[campaign_id] = fingerprint(self.campaigns[campaign_id])
        return found

    def version(self, campaign_id: str) -> str:
        """The campaign's version, which its enrollments and deliveries record: the hash of its file's text."""
        found = self._versions.get(campaign_id)
        if found is None:
            doc = self.documents.get(campaign_id)
            found = content_hash(doc.text) if doc is not None and doc.text is not None else self.fingerprint(campaign_id)
            self._versions[campaign_id] = found
        return found

    def campaign(self, campaign_id: str) -> Campaign:
        """The campaign with that id; InvalidInput naming the known ids otherwise."""
        try:
            return self.campaigns[campaign_id]
        except KeyError:
            known = ", ".join(sorted(self.campaigns)) or "none"
            raise InvalidInput(f"no campaign '{campaign_id}' (known: {known})") from None

    def raise_for_problems(self) -> Catalog:
        """Raise DefinitionError if anything was wrong; return self otherwise."""
        if self.problems:
            raise DefinitionError(self.problems)
        return self


def fingerprint(campaign: Campaign) -> str:
    """A short hash of a campaign's parsed content, to tell an edit that changes what the campaign does from one that
    changes only its text (comments, layout). A step without ``replaces`` hashes as it did before the key existed."""
    data = campaign.model_dump(mode="json", by_alias=True)
    for step in data["steps"]:
        if not step.get("replaces"):
            step.pop("replaces", None)
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _data_loc(data: Any, loc: tuple[Any, ...]) -> Loc:
    """Keep the parts of a pydantic error location that index into the YAML data (drop union tags and the like)."""
    kept: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            kept.append(part)
        elif isinstance(node, dict) and part == "not_" and "not" in node:
            node = node["not"]
            kept.append("not")
        elif isinstance(node, dict) and part == "in_" and "in" in node:
            node = node["in"]
            kept.append("in")
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            kept.append(part)
        elif isinstance(node, (dict, list)):
            # a key that is not in the data: a missing or unknown field name, kept for the message only
            continue
    return tuple(kept)


def _has_mapping(annotation: Any) -> bool:
    """Whether an annotation holds a ``dict`` (whose keys are data, not field names)."""
    if get_origin(annotation) is dict:
        return True
    return any(_has_mapping(argument) for argument in get_args(annotation))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, Union, list, dict and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for argument in get_args(annotation):
        found.extend(_models_in(argument))
    return found


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model whose keys are expected at ``loc`` (a location in the data), for did-you-mean hints."""
    current: list[type[BaseModel]] = [model]
    key_is_data = False  # the previous part was a dict field: this part is one of its keys, not a field name
    for part in loc:
        if isinstance(part, int):
            continue  # a list item: the same models as the list holds
        if key_is_data:
            key_is_data = False
            continue
        following: list[type[BaseModel]] = []
        for candidate in current:
            for name, info in candidate.model_fields.items():
                if part in (name, info.alias):
                    following.extend(_models_in(info.annotation))
                    key_is_data = key_is_data or _has_mapping(info.annotation)
        if not following:
            return None
        current = following
    return current[0] if current else None


# When a value fails every branch of a union, pydantic reports one error per branch; keep the most telling one.
_RANK = {"value_error": 0, "assertion_error": 0, "literal_error": 1, "enum": 1, "string_pattern_mismatch": 1}


def _rank(error: ErrorDetails) -> int:
    if error["type"] == "literal_error" and error["msg"] == "Input should be 'always'":
        return 3  # the 'always' shorthand of send windows: only telling when nothing else is said
    return _RANK.get(error["type"], 2)


def _below(loc: Loc, others: list[Loc]) -> bool:
    """Whether a more precise problem was found inside ``loc`` (then a union's 'wrong shape' errors say nothing)."""
    return any(len(other) > len(loc) and other[: len(loc)] == loc for other in others)


def _message(error: ErrorDetails, data_loc: Loc, model: type[BaseModel]) -> str:
    kind = error["type"]
    last = error["loc"][-1] if error["loc"] else None
    if kind == "extra_forbidden":
        owner = _model_at(model, data_loc[:-1])
        hint = difflib.get_close_matches(str(last), _known_keys(owner), n=1) if owner is not None else []
        suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown key '{last}'{suffix}"
    if kind == "missing":
        return f"missing required key '{last}'"
    # Name the key only when the error is at a key of the data (not inside a union branch or an internal field).
    key = data_loc[-1] if data_loc and isinstance(data_loc[-1], str) and data_loc[-1] == last else None
    if kind == "string_pattern_mismatch" and key in ("id",):
        return f"id: '{error['input']}' is not a valid id: use lower-case letters, digits, '-' and '_'"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        shorthand = " or 'always'" if data_loc and data_loc[-1] == "send_window" else ""
        named = f"{data_loc[-1]}: " if data_loc and isinstance(data_loc[-1], str) else ""
        return f"{named}expected a mapping of keys{shorthand}, not {error['input']!r}"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if key is not None and key not in message:
        return f"{key}: {message}"
    return message


def _known_keys(model: type[BaseModel] | None) -> list[str]:
    names: list[str] = []
    for name, info in (model.model_fields.items() if model is not None else ()):
        names.append(info.alias or name)
    return names


def validate_document(doc: YamlDocument, model: type[M]) -> tuple[M | None, list[Problem]]:
    """Validate parsed YAML against a model; errors come back as problems at the line of the offending key. A file
    with a duplicate or unsupported key is validated too (its other problems are reported in the same run), but not
    used."""
    if doc.data is None:
        empty = [] if doc.problems else [doc.problem((), "the file is empty")]
        return None, [*doc.problems, *empty]
    if not isinstance(doc.data, dict):
        return None, [*doc.problems, doc.problem((), "expected a mapping of keys (id, name, steps, ...) at the top level")]
    try:
        validated = model.model_validate(doc.data)
    except ValidationError as exc:
        return None, [*doc.problems, *validation_problems(doc, exc, model)]
    return (None, list(doc.problems)) if doc.problems else (validated, [])


def validation_problems(doc: YamlDocument, exc: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """Pydantic's errors for a YAML file as ``path:line: message`` problems: at the offending key's line, one per
    place (a union's other branches say nothing useful), unknown keys with a did-you-mean hint from their own mapping."""
    chosen: dict[Loc, tuple[int, ErrorDetails]] = {}
    always: list[tuple[Loc, ErrorDetails]] = []
    for error in exc.errors():
        loc = _data_loc(doc.data, tuple(error["loc"]))
        if error["type"] in ("extra_forbidden", "missing"):
            always.append((loc, error))
        elif loc not in chosen or _rank(error) < chosen[loc][0]:
            chosen[loc] = (_rank(error), error)
    precise = [loc for loc, _error in always] + list(chosen)
    kept = [(loc, error) for loc, (rank, error) in chosen.items() if rank < 2 or not _below(loc, precise)]
    problems: dict[tuple[int, str], Problem] = {}
    for loc, error in always + kept:
        problem = doc.problem(loc, _message(error, loc, model))
        problems.setdefault((problem.line, problem.message), problem)
    return list(problems.values())


@dataclass
class _Steps:
    """A campaign file's steps for the reference checks: each one's model (None where it is invalid), and the ids and
    email steps as written, so a file with bad values still has its references checked in the same run."""

    steps: list[Step | None]
    ids: list[str | None]
    email_steps: set[str]
    raw_jumps: dict[int, list[tuple[Loc, str, str]]] = field(default_factory=dict)
    """The jumps written in each invalid step (by index), so a bad value does not hide a bad target."""

    @classmethod
    def of(cls, campaign: Campaign | None, doc: YamlDocument) -> tuple[_Steps, list[Problem]]:
        if campaign is not None:
            ids: list[str | None] = [step.id for step in campaign.steps]
            emails = {step.id for step in campaign.steps if step.email is not None or step.stream is not None}
            return cls(list(campaign.steps), ids, emails), []
        raw_steps = doc.data.get("steps") if isinstance(doc.data, dict) else None
        steps: list[Step | None] = []
        problems: list[Problem] = []
        ids, emails = [], set()
        jumps: dict[int, list[tuple[Loc, str, str]]] = {}
        for index, written in enumerate(raw_steps if isinstance(raw_steps, list) else []):
            raw: dict[str, Any] = written if isinstance(written, dict) else {}
            raw_id = raw.get("id") if isinstance(raw.get("id"), str) else None
            ids.append(raw_id)
            if raw_id is not None and (raw.get("email") is not None or raw.get("stream") is not None):
                emails.add(raw_id)
            try:
                steps.append(Step.model_validate(raw))
            except ValidationError:
                steps.append(None)  # its value problems are reported by the campaign's validation
                jumps[index] = _written_jumps(raw)
                known = all(key in Step.model_fields for key in raw)
                rules = step_rule_problems(raw, count_actions=known) if raw else []
                problems += [doc.problem(("steps", index), message) for message in rules]
        return cls(steps, ids, emails, jumps), problems

    def index_of(self, step_id: str) -> int | None:
        return self.ids.index(step_id) if step_id in self.ids else None


def _written_jumps(raw: dict[str, Any]) -> list[tuple[Loc, str, str]]:
    """(where, key, target) of every jump an invalid step names in text, as :meth:`Step.targets` would give them."""
    jumps: list[tuple[Loc, str, str]] = [((key,), key, raw[key]) for key in ("goto", "on_event", "on_timeout")
                                         if isinstance(raw.get(key), str) and raw[key]]
    rules = raw.get("branch")
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(rule, dict) and isinstance(rule.get("goto"), str) and rule["goto"]:
            jumps.append((("branch", i, "goto"), "branch.goto", rule["goto"]))
    return jumps


def _check_references(steps: _Steps, doc: YamlDocument, templates_dir: Path | None) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, (step, step_id) in enumerate(zip(steps.steps, steps.ids, strict=True)):
        at: Loc = ("steps", index)
        if step_id is not None and step_id in seen:
            problems.append(doc.problem((*at, "id"), f"duplicate step id '{step_id}'"))
        seen.add(step_id or "")
        if step is None:
            jumps = steps.raw_jumps.get(index, [])
        else:
            jumps = [((key,), key, target) for key, target in step.targets() if key != "branch.goto"]
            jumps += [(("branch", i, "goto"), "branch.goto", rule.goto) for i, rule in enumerate(step.branch or [])]
        for loc, key, target in jumps:
            if target != END and target not in steps.ids:
                problems.append(doc.problem((*at, *loc), f"{key} target '{target}' is not a step of this campaign"))
        if step is None:
            continue
        conditions: list[tuple[Loc, Condition | None]] = [(("when",), step.when)]
        conditions += [(("branch", i, "when"), rule.when) for i, rule in enumerate(step.branch or [])]
        for where, condition in conditions:
            for loc, test, ref in condition.located_step_refs() if condition is not None else []:
                if ref not in steps.email_steps:
                    problems.append(doc.problem((*at, *where, *loc), f"{test}: '{ref}' is not an email step of this campaign"))
                elif steps.ids.index(ref) >= index and where == ("when",):
                    problems.append(doc.problem((*at, *where, *loc), f"{test}: '{ref}' does not come before step '{step_id}'"))
        if step.wait_for and step.wait_for.step and step.wait_for.step not in steps.email_steps:
            problems.append(
                doc.problem((*at, "wait_for", "step"), f"wait_for step '{step.wait_for.step}' is not an email step")
            )
        if templates_dir is not None:
            problems.extend(_check_templates(step, at, doc, templates_dir))
    problems.extend(_check_replaces(steps, doc))
    problems.extend(_check_loops(steps, doc))
    return problems


def _check_replaces(steps: _Steps, doc: YamlDocument) -> list[Problem]:
    """``replaces`` names steps that were removed: not a step of this campaign, and each one replaced by one step."""
    problems: list[Problem] = []
    replaced_by: dict[str, str] = {}
    for index, step in enumerate(steps.steps):
        for position, old_id in enumerate(step.replaces if step is not None else []):
            at: Loc = ("steps", index, "replaces", position)
            if old_id in steps.ids:
                problems.append(doc.problem(at, f"replaces: '{old_id}' is still a step of this campaign (replaces "
                                                "names removed steps; drop it from the list)"))
            elif old_id in replaced_by:
                problems.append(doc.problem(at, f"replaces: '{old_id}' is already replaced by step "
                                                f"'{replaced_by[old_id]}' (each removed step goes to one step)"))
            else:
                replaced_by[old_id] = str(step.id if step is not None else "")
    return problems


def _successors(steps: _Steps, index: int) -> list[int]:
    step = steps.steps[index]
    assert step is not None
    after = [index + 1] if index + 1 < len(steps.steps) else []
    jumps = [t for _k, t in step.targets() if t != END]
    targets = [steps.index_of(t) for t in jumps]
    if step.branch is not None:
        defaulted = any(rule.when is None for rule in step.branch)
        return [i for i in targets if i is not None] + ([] if defaulted else after)
    if step.wait_for is not None:
        ends = [step.on_event or step.goto, step.on_timeout or step.goto]
        found = [steps.index_of(t) if t else (after[0] if after else None) for t in ends if t != END]
        return [i for i in found if i is not None]
    if step.goto is not None:
        return [i for i in targets if i is not None]
    return after


def _check_loops(steps: _Steps, doc: YamlDocument) -> list[Problem]:
    """A cycle of steps in which nothing waits (no ``wait``, no ``wait_for``, no stream cadence) would never end."""
    instant = {i for i, step in enumerate(steps.steps)
               if step is not None and not step.wait and step.wait_for is None and step.stream is None}
    problems, reported = [], set()
    for start in sorted(instant):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in _successors(steps, node):
                if nxt == start and start not in reported:
                    names = " -> ".join(str(steps.ids[i]) for i in [*path, start])
                    problems.append(doc.problem(("steps", start, "id"), f"steps loop without any wait: {names}"))
                    reported.update(path)
                elif nxt in instant and nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return problems


def template_uses(step: Step) -> list[tuple[Loc, str, str, str | None]]:
    """(location in the step, template, subject, variant or content id) of every email a step can send."""
    uses: list[tuple[Loc, str, str, str | None]] = []
    if step.email is not None:
        if step.email.variants:
            for i, (variant, _w, template, subject) in enumerate(step.email.resolved_variants()):
                uses.append((("email", "variants", i), template, subject, variant))
        else:
            uses.append((("email",), step.email.template or "", step.email.subject or "", None))
    if step.stream is not None:
        for i, item in enumerate(step.stream.content):
            uses.append((("stream", "content", i), item.template, item.subject, item.id))
    return uses


def _check_templates(step: Step, at: Loc, doc: YamlDocument, templates_dir: Path) -> list[Problem]:
    problems = []
    for loc, template, _subject, _variant in template_uses(step):
        if not (templates_dir / template).is_file():
            where = (*at, *loc, "template") if (*at, *loc, "template") in doc.lines else (*at, *loc)
            problems.append(doc.problem(where, f"template '{template}' not found in {templates_dir}"))
    return problems


def load_campaign_file(path: Path, templates_dir: Path | None = None) -> tuple[Campaign | None, YamlDocument, list[Problem]]:
    """Load one campaign file; the campaign is None when it has problems that stop it being used. Every problem of
    the file comes back at once, each at its own line: its keys and values, and the references of its valid steps."""
    doc = load_yaml(path)
    campaign, problems = validate_document(doc, Campaign)
    if campaign is not None or isinstance(doc.data, dict):
        steps, rule_problems = _Steps.of(campaign, doc)
        problems = [*problems, *rule_problems, *_check_references(steps, doc, templates_dir)]
    unique = list(dict.fromkeys(problems))
    return (campaign if not unique else None), doc, unique


def campaign_files(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split the given files and folders into campaign files and policy files (scoring/routing are not campaigns)."""
    campaigns: list[Path] = []
    policies: list[Path] = []
    for path in paths:
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        for file in files:
            if file.name == POLICY_FILE:
                policies.append(file)
            elif file.name not in RESERVED_FILES and not file.name.startswith("_"):
                campaigns.append(file)
    return campaigns, policies


def load_catalog(campaigns_dir: Path, templates_dir: Path | None = None, *, files: list[Path] | None = None) -> Catalog:
    """Load every campaign in ``campaigns_dir`` (or just ``files``) and the policy; collect, never raise, problems."""
    catalog = Catalog()
    if files is None and not campaigns_dir.is_dir():
        catalog.problems.append(Problem(str(campaigns_dir), 0, "campaigns folder not found"))
        return catalog
    campaign_paths, policy_paths = campaign_files(files if files is not None else [campaigns_dir])
    if files is not None and not policy_paths and (campaigns_dir / POLICY_FILE).is_file():
        policy_paths = [campaigns_dir / POLICY_FILE]
    for path in policy_paths:
        doc = load_yaml(path)
        policy, problems = validate_document(doc, Policy)
        catalog.problems.extend(problems)
        if policy is not None:
            catalog.policy, catalog.policy_document = policy, doc
    where_defined: dict[str, YamlDocument] = {}
    for path in campaign_paths:
        if not path.is_file():
            catalog.problems.append(Problem(str(path), 0, "file not found"))
            continue
        campaign, doc, problems = load_campaign_file(path, templates_dir)
        catalog.problems.extend(problems)
        if campaign is None:
            continue
        if campaign.id in where_defined:
            first = where_defined[campaign.id]
            catalog.problems.append(
                doc.problem(("id",), f"campaign id '{campaign.id}' is already used by {first.path}:{first.line_of(('id',))}")
            )
            continue
        where_defined[campaign.id] = doc
        catalog.campaigns[campaign.id] = campaign
        catalog.documents[campaign.id] = doc
    return catalog
