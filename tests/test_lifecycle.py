"""The lifecycle table: every (state, event) pair, the guards, recidivism, the generated doc."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suitsrv import lifecycle
from suitsrv.errors import ServiceError
from suitsrv.lifecycle import (
    DEVICE_MAY_TRIGGER,
    GUARDS,
    PINHOLE_STATES,
    RESTORABLE_BACKUP_STATES,
    TRANSITIONS,
    TRIGGERS,
    Actor,
    DeviceLifecycle,
    Event,
    IllegalTransition,
    State,
    allowed,
    apply,
    doc_block,
    may_restore,
    may_trigger,
    mermaid,
    next_state,
)
from suitsrv.store import Role

S, E = State, Event
WINDOW = 100.0
DOC = Path(__file__).resolve().parent.parent / "docs" / "lifecycle.md"

# The specification, written out again on purpose: changing the table means changing this.
_SPEC = """
new                  enrolled                   nominal
nominal              incident-reported          suspicious
nominal              advisory-matched           suspect
nominal              quarantine-ordered         quarantined
suspicious           incident-reported          quarantined
suspicious           incident-cleared           nominal
suspicious           advisory-matched           quarantined
suspicious           quarantine-ordered         quarantined
suspect              incident-reported          quarantined
suspect              quarantine-ordered         quarantined
suspect              update-fetched             upgrading
quarantined          update-fetched             upgrading
quarantined          escalation-cleared         quarantined
upgrading            update-reported            returning-to-service
upgrading            incident-reported          quarantined
upgrading            quarantine-ordered         quarantined
upgrading            attestation-failed         quarantined
upgrading            escalation-cleared         upgrading
returning-to-service attestation-affirmed       returning-to-service
returning-to-service config-restored            returning-to-service
returning-to-service reinstatement-acknowledged nominal
returning-to-service incident-reported          quarantined
returning-to-service quarantine-ordered         quarantined
returning-to-service attestation-failed         quarantined
returning-to-service escalation-cleared         returning-to-service
"""
EXPECTED = {(S(a), E(b)): S(c) for a, b, c in (line.split() for line in _SPEC.strip().splitlines())}
EXPECTED |= {(s, E.DECOMMISSIONED): S.DECOMMISSIONED for s in State if s is not S.DECOMMISSIONED}

ALL_PAIRS = list(itertools.product(State, Event))


def _run(lc: DeviceLifecycle, *events: Event, now: float = 0.0) -> DeviceLifecycle:
    for event in events:
        lc = apply(lc, event, now=now, window=WINDOW)
    return lc


def _permissive(state: State) -> DeviceLifecycle:
    """A snapshot that satisfies every guard, so only the table decides."""
    return DeviceLifecycle(state, verdict_affirmed=True, config_restored_or_none=True)


REMEDIATE = (E.UPDATE_FETCHED, E.UPDATE_REPORTED, E.ATTESTATION_AFFIRMED, E.CONFIG_RESTORED)
REINSTATE = (*REMEDIATE, E.REINSTATEMENT_ACKNOWLEDGED)


def test_the_table_is_the_specified_one_and_read_only() -> None:
    assert dict(TRANSITIONS) == EXPECTED
    assert [s.value for s in State] == [
        "new",
        "nominal",
        "suspicious",
        "suspect",
        "quarantined",
        "upgrading",
        "returning-to-service",
        "decommissioned",
    ]
    with pytest.raises(TypeError):
        TRANSITIONS[(S.NEW, E.ENROLLED)] = S.DECOMMISSIONED  # type: ignore[index]


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=[f"{s}-{e}" for s, e in ALL_PAIRS])
def test_every_state_event_pair(state: State, event: Event) -> None:
    before = _permissive(state)
    snapshot = dataclasses.replace(before)
    if (state, event) in EXPECTED:
        assert allowed(state, event)
        assert next_state(state, event) is EXPECTED[(state, event)]
        assert apply(before, event, now=1.0, window=WINDOW).state is EXPECTED[(state, event)]
        assert before == snapshot
        return
    assert not allowed(state, event)
    with pytest.raises(IllegalTransition) as excinfo:
        next_state(state, event)
    assert (excinfo.value.state, excinfo.value.event) == (state, event)
    with pytest.raises(IllegalTransition) as excinfo:
        apply(before, event, now=1.0, window=WINDOW)
    error = excinfo.value
    assert (error.state, error.event) == (state, event)
    assert isinstance(error, ServiceError)
    assert (error.status, error.problem) == (409, "illegal-transition")
    assert error.extensions == {"state": state.value, "event": event.value}
    assert str(state) in error.detail and str(event) in error.detail
    assert before == snapshot


def test_happy_path_from_new_to_nominal_through_quarantine() -> None:
    lc = _run(DeviceLifecycle(), E.ENROLLED, E.INCIDENT_REPORTED)
    assert lc.state is S.SUSPICIOUS
    lc = apply(lc, E.INCIDENT_REPORTED, now=10.0, window=WINDOW)
    assert (lc.state, lc.quarantines, lc.escalated) == (S.QUARANTINED, (10.0,), False)
    lc = _run(lc, E.UPDATE_FETCHED, E.UPDATE_REPORTED, now=20.0)
    assert lc.state is S.RETURNING_TO_SERVICE and not may_restore(lc)
    lc = _run(lc, E.ATTESTATION_AFFIRMED)
    assert lc.verdict_affirmed and may_restore(lc)
    lc = _run(lc, E.CONFIG_RESTORED, E.REINSTATEMENT_ACKNOWLEDGED)
    assert lc == DeviceLifecycle(S.NOMINAL, quarantines=(10.0,))


def test_an_advisory_makes_a_nominal_device_suspect_and_confirms_a_suspicious_one() -> None:
    nominal = _run(DeviceLifecycle(), E.ENROLLED)
    suspect = _run(nominal, E.ADVISORY_MATCHED)
    assert suspect.state is S.SUSPECT
    # Suspect until upgraded: no quarantine on the way, so nothing counts as recidivism.
    assert _run(suspect, *REINSTATE) == DeviceLifecycle(S.NOMINAL)
    confirmed = _run(nominal, E.INCIDENT_REPORTED, E.ADVISORY_MATCHED)
    assert (confirmed.state, confirmed.quarantines) == (S.QUARANTINED, (0.0,))
    for state in (S.NEW, S.SUSPECT, S.QUARANTINED, S.UPGRADING, S.RETURNING_TO_SERVICE):
        assert not allowed(state, E.ADVISORY_MATCHED)


def _quarantined_twice(first: float, second: float) -> DeviceLifecycle:
    lc = _run(DeviceLifecycle(), E.ENROLLED)
    lc = apply(lc, E.QUARANTINE_ORDERED, now=first, window=WINDOW)
    lc = _run(lc, *REINSTATE, now=first + 1)
    return apply(lc, E.QUARANTINE_ORDERED, now=second, window=WINDOW)


@pytest.mark.parametrize(
    ("gap", "escalated"),
    [(1.0, True), (WINDOW - 0.001, True), (WINDOW, True), (WINDOW + 0.001, False), (1e6, False)],
)
def test_recidivism_window_boundaries(gap: float, escalated: bool) -> None:
    lc = _quarantined_twice(1000.0, 1000.0 + gap)
    assert lc.quarantines == (1000.0, 1000.0 + gap)
    assert lc.escalated is escalated
    remediated = _run(lc, *REMEDIATE)
    if not escalated:
        assert _run(remediated, E.REINSTATEMENT_ACKNOWLEDGED).state is S.NOMINAL
        return
    with pytest.raises(IllegalTransition, match="recidivism window") as excinfo:
        apply(remediated, E.REINSTATEMENT_ACKNOWLEDGED, now=2000.0, window=WINDOW)
    assert excinfo.value.reason.startswith("quarantined again")


def test_an_operator_clears_an_escalation_but_the_device_still_needs_its_verdict() -> None:
    lc = _quarantined_twice(0.0, 50.0)
    assert lc.escalated
    lc = _run(lc, E.ESCALATION_CLEARED)
    assert (lc.state, lc.escalated) == (S.QUARANTINED, False)
    lc = _run(lc, E.UPDATE_FETCHED, E.UPDATE_REPORTED)
    with pytest.raises(IllegalTransition, match="verdict"):
        _run(lc, E.REINSTATEMENT_ACKNOWLEDGED)
    # Cleared in a later state too, and the escalation survives the remediation until then.
    escalated = _run(_quarantined_twice(0.0, 50.0), *REMEDIATE)
    assert escalated.escalated
    assert _run(escalated, E.ESCALATION_CLEARED, E.REINSTATEMENT_ACKNOWLEDGED).state is S.NOMINAL


def test_a_failed_attestation_on_the_way_back_counts_as_a_new_quarantine() -> None:
    lc = _run(_run(DeviceLifecycle(), E.ENROLLED), E.QUARANTINE_ORDERED, now=0.0)
    lc = _run(lc, E.UPDATE_FETCHED, E.UPDATE_REPORTED, E.ATTESTATION_AFFIRMED, now=5.0)
    lc = apply(lc, E.ATTESTATION_FAILED, now=10.0, window=WINDOW)
    assert (lc.state, lc.quarantines, lc.escalated) == (S.QUARANTINED, (0.0, 10.0), True)
    assert not lc.verdict_affirmed


def test_reinstatement_needs_verdict_and_restore_and_they_reset_on_return() -> None:
    upgraded = _run(DeviceLifecycle(S.QUARANTINED), E.UPDATE_FETCHED, E.UPDATE_REPORTED)
    with pytest.raises(IllegalTransition, match="no affirming attestation verdict"):
        _run(upgraded, E.CONFIG_RESTORED)  # restore only after an affirming verdict
    with pytest.raises(IllegalTransition, match="configuration not restored"):
        _run(upgraded, E.ATTESTATION_AFFIRMED, E.REINSTATEMENT_ACKNOWLEDGED)
    ready = _run(upgraded, E.ATTESTATION_AFFIRMED, E.CONFIG_RESTORED)
    assert ready.verdict_affirmed and ready.config_restored_or_none
    # A verdict and a restore belong to one return: going round again starts from nothing.
    again = _run(ready, E.INCIDENT_REPORTED, E.UPDATE_FETCHED, E.UPDATE_REPORTED)
    assert again.state is S.RETURNING_TO_SERVICE
    assert not (again.verdict_affirmed or again.config_restored_or_none)
    assert set(GUARDS) == {E.CONFIG_RESTORED, E.REINSTATEMENT_ACKNOWLEDGED}


def test_device_triggerable_events() -> None:
    assert {E.UPDATE_FETCHED, E.UPDATE_REPORTED} == DEVICE_MAY_TRIGGER
    for event in Event:
        assert TRIGGERS[event], event
        assert may_trigger(Role.DEVICE, event) is (event in DEVICE_MAY_TRIGGER)
    for event in (E.ATTESTATION_AFFIRMED, E.CONFIG_RESTORED, E.REINSTATEMENT_ACKNOWLEDGED):
        assert not may_trigger("device", event)
    # Appraisal results and restores come from the service itself, never from a caller.
    assert {e for e in Event if may_trigger(Actor.SERVICE, e)} == {
        E.ATTESTATION_AFFIRMED,
        E.ATTESTATION_FAILED,
        E.CONFIG_RESTORED,
    }
    assert not any(may_trigger(role, E.ATTESTATION_AFFIRMED) for role in Role)
    assert {r.value for r in Role} <= {a.value for a in Actor}
    assert may_trigger(Role.GATEWAY, E.REINSTATEMENT_ACKNOWLEDGED)
    assert may_trigger(Role.OPERATOR, E.ESCALATION_CLEARED)


def test_decommissioned_is_terminal_and_reachable_from_everywhere() -> None:
    assert not any(allowed(S.DECOMMISSIONED, e) for e in Event)
    assert all(
        next_state(s, E.DECOMMISSIONED) is S.DECOMMISSIONED for s in State if s != s.DECOMMISSIONED
    )


def test_every_state_is_reachable_and_every_live_state_can_get_back_to_nominal() -> None:
    def reach(start: State) -> set[State]:
        seen, todo = {start}, [start]
        while todo:
            here = todo.pop()
            for (source, _), target in TRANSITIONS.items():
                if source is here and target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    assert reach(S.NEW) == set(State)
    assert all(S.NOMINAL in reach(s) for s in State if s is not S.DECOMMISSIONED)


def test_restore_and_pinhole_sets() -> None:
    assert {S.QUARANTINED, S.UPGRADING, S.RETURNING_TO_SERVICE} == PINHOLE_STATES
    assert {S.NEW, S.NOMINAL} == RESTORABLE_BACKUP_STATES
    assert not may_restore(DeviceLifecycle(S.NOMINAL, verdict_affirmed=True))


# --- the generated diagram and the doc ---------------------------------------------------


def test_mermaid_round_trips_the_table() -> None:
    text = mermaid()
    assert text == mermaid() and text.startswith("stateDiagram-v2\n")
    names = {s.value.replace("-", "_"): s for s in State}
    edges = re.findall(r"^    (\w+) --> (\w+): (.+)$", text, re.MULTILINE)
    parsed = {
        (names[a], E(event)): names[b] for a, b, events in edges for event in events.split(", ")
    }
    assert parsed == dict(TRANSITIONS)
    assert '    state "returning-to-service" as returning_to_service\n' in text
    assert text.endswith("    decommissioned --> [*]\n")


def test_the_doc_diagram_is_generated_from_the_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- lifecycle-diagram:start -->")[1].split(
        "<!-- lifecycle-diagram:end -->"
    )[0]
    assert block == doc_block(), "run: python -m suitsrv.lifecycle --write-docs"
    assert f"```mermaid\n{mermaid()}```" in text


def _doc_table(heading: str) -> dict[str, list[str]]:
    section = DOC.read_text(encoding="utf-8").split(f"## {heading}\n")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([a-z-]+)` \| (.+?) \|$", section, re.MULTILINE)
    return {name: rest.split(" | ") for name, rest in rows}


def test_the_doc_tables_name_every_state_and_who_triggers_each_event() -> None:
    states = _doc_table("States")
    assert list(states) == [s.value for s in State]
    for state, (_, reach) in states.items():
        assert ("pinhole" in reach) is (State(state) in PINHOLE_STATES), state
    events = _doc_table("Events")
    assert list(events) == [e.value for e in Event]
    for event, (who, _) in events.items():
        assert set(who.split(", ")) == set(TRIGGERS[Event(event)]), event


def test_write_docs_rewrites_only_the_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "lifecycle.md"
    doc.write_text(
        "intro\n<!-- lifecycle-diagram:start -->\nstale\n<!-- lifecycle-diagram:end -->\nrest\n"
    )
    monkeypatch.setattr(lifecycle, "_DOC", doc)
    assert lifecycle._main(["--write-docs"]) == 0
    expected = "intro\n<!-- lifecycle-diagram:start -->" + doc_block()
    assert doc.read_text() == expected + "<!-- lifecycle-diagram:end -->\nrest\n"
    assert lifecycle._main(["--write-docs"]) == 0  # idempotent
    assert doc.read_text().count("stateDiagram-v2") == 1
    doc.write_text("no markers\n")
    assert lifecycle._main(["--write-docs"]) == 1
    assert doc.read_text() == "no markers\n"
    assert lifecycle._main([]) == 0
    assert capsys.readouterr().out == mermaid()
    assert lifecycle._main(["--bogus"]) == 2


# --- properties ----------------------------------------------------------------------------

_snapshots = st.builds(
    DeviceLifecycle,
    state=st.sampled_from(State),
    quarantines=st.lists(st.floats(0, 1e4), max_size=3).map(lambda ts: tuple(sorted(ts))),
    escalated=st.booleans(),
    verdict_affirmed=st.booleans(),
    config_restored_or_none=st.booleans(),
)
_steps = st.lists(st.tuples(st.sampled_from(Event), st.floats(0, 2 * WINDOW)), max_size=40)


@given(_snapshots, _steps)
def test_random_sequences_stay_in_the_table(
    start: DeviceLifecycle, steps: list[tuple[Event, float]]
) -> None:
    lc, now = start, 1e4
    for event, dt in steps:
        now += dt
        try:
            after = apply(lc, event, now=now, window=WINDOW)
        except IllegalTransition as exc:
            assert (exc.state, exc.event) == (lc.state, event)
            continue
        assert after.state in State
        assert after.state is TRANSITIONS[(lc.state, event)]
        entered = after.state is S.QUARANTINED and lc.state is not S.QUARANTINED
        assert after.quarantines == ((*lc.quarantines, now) if entered else lc.quarantines)
        if after.state is not S.RETURNING_TO_SERVICE:
            assert not (after.verdict_affirmed or after.config_restored_or_none)
        if (
            after.state is S.NOMINAL
            and lc.state is not S.NOMINAL
            and lc.state is S.RETURNING_TO_SERVICE
        ):
            assert lc.verdict_affirmed and lc.config_restored_or_none and not lc.escalated
        lc = after


@given(st.lists(st.sampled_from(sorted(DEVICE_MAY_TRIGGER)), max_size=30), st.booleans())
def test_a_device_alone_never_leaves_the_pinhole(events: list[Event], escalated: bool) -> None:
    lc = DeviceLifecycle(S.QUARANTINED, quarantines=(0.0,), escalated=escalated)
    for event in events:
        with contextlib.suppress(IllegalTransition):
            lc = apply(lc, event, now=1.0, window=WINDOW)
        assert lc.state in PINHOLE_STATES
        assert not lc.verdict_affirmed and not lc.config_restored_or_none
