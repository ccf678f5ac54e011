"""actors._turnstore: each storage effect of the coordinator, its ask and the event it becomes, against a scripted
persistence (no actor): what each caller hears, what is logged, what is told back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pykka
import pytest

from agenthost.actors import _turnevents as ev
from agenthost.actors import _turnstore
from agenthost.actors._errors import HostUnavailableError
from agenthost.actors._turns import TurnRegistry
from agenthost.actors._turnstate import Unpersisted
from agenthost.actors._turnstore import TAKEN_BACK_NOTE, TurnStore
from agenthost.protocol._messages import (
    AddActionCard,
    BeginTurn,
    BeginTurns,
    EnqueueFollowUp,
    EnqueueFollowUps,
    FinishTurn,
    NextFollowUpStarted,
    SettleFollowUp,
    StartNextFollowUp,
    StartNextFollowUps,
    TakeBack,
    TakenBegin,
    TurnBegun,
    UpdateThread,
)
from agenthost.storage import (
    FollowUpRow,
    StorageError,
    StorageFullError,
    ThreadSettings,
    TurnAlreadyFinishedError,
    TurnRow,
    UnknownThreadError,
)
from agenthost.testing import capture_events

pytestmark = pytest.mark.timeout(10)

SETTINGS = ThreadSettings(thread={"cwd": "/w"}, turn={"model": "m"})


class Scripted:
    """The persistence actor's side: records every message; `answer(message)` is what the ask returns or raises."""

    def __init__(self, answer: Callable[[Any], Any] = lambda message: None) -> None:
        self.answer = answer
        self.asked: list[Any] = []
        self.told: list[Any] = []

    def ask(self, message: Any) -> Any:
        self.asked.append(message)
        outcome = self.answer(message)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def store_for(scripted: Scripted, registry: TurnRegistry | None = None) -> TurnStore:
    return TurnStore(scripted.ask, scripted.told.append, registry or TurnRegistry())


def turn_row(turn_id: str, thread_id: str = "t1") -> TurnRow:
    return TurnRow(
        turn_id=turn_id,
        thread_id=thread_id,
        seq=1,
        user_text="q",
        assistant_text="",
        status="pending",
        error=None,
        worker_id=None,
        created_at=1.0,
        finished_at=None,
    )


def begun(turn_id: str, thread_id: str = "t1", project_id: str = "p") -> TurnBegun:
    return TurnBegun(turn=turn_row(turn_id, thread_id), settings=SETTINGS, project_id=project_id)


def head(followup_id: str, thread_id: str = "t1", text: str = "later") -> FollowUpRow:
    return FollowUpRow(
        followup_id=followup_id, thread_id=thread_id, seq=1, text=text, state="dispatched", created_at=1.0
    )


def begin(turn_id: str, thread_id: str = "t1") -> ev.Begin:
    return ev.Begin(
        turn_id=turn_id, thread_id=thread_id, text=f"text of {turn_id}", sink=f"sink-{turn_id}", reply_to=turn_id
    )


# --- direct begins ---------------------------------------------------------------------------------------------
def test_direct_begins_go_in_one_ask_and_each_caller_hears_its_own_outcome() -> None:
    refused = UnknownThreadError("unknown thread id 'ghost'")
    scripted = Scripted(lambda message: (begun("u1"), refused))
    store = store_for(scripted)
    first, second = store.begin_direct([begin("u1"), begin("u2", "ghost")])
    assert scripted.asked == [
        BeginTurns(
            begins=(
                BeginTurn(turn_id="u1", thread_id="t1", user_text="text of u1"),
                BeginTurn(turn_id="u2", thread_id="ghost", user_text="text of u2"),
            )
        )
    ]
    assert first == ev.Begun(
        turn_id="u1", thread_id="t1", text="text of u1", sink="sink-u1", settings=SETTINGS, reply_to="u1"
    )
    assert second == ev.BeginRefused(
        turn_id="u2", thread_id="ghost", error=repr(refused), exception=refused, reply_to="u2"
    )
    assert (store.project_of("t1"), store.project_of("ghost")) == ("p", None)


@pytest.mark.parametrize(
    ("failure", "heard"),
    [
        (StorageFullError("disk full"), StorageFullError),
        (pykka.Timeout("no answer"), HostUnavailableError),
        (pykka.ActorDeadError("stopped"), HostUnavailableError),
        (HostUnavailableError("restarting"), HostUnavailableError),
    ],
)
def test_a_round_refused_whole_is_every_callers_refusal_and_never_pykkas_error(failure: Exception, heard: type) -> None:
    store = store_for(Scripted(lambda message: failure))
    outcomes = store.begin_direct([begin("u1"), begin("u2")])
    assert [type(o.exception) for o in outcomes] == [heard, heard]
    assert outcomes[0].exception is outcomes[1].exception  # one refusal, heard by each
    if heard is HostUnavailableError:
        assert str(outcomes[0].exception) == f"agenthost's storage cannot take this now: {failure}"
    else:
        assert outcomes[0].exception is failure


def test_a_project_is_remembered_from_the_last_begins_and_bounded(monkeypatch) -> None:
    monkeypatch.setattr(_turnstore, "PROJECTS_KEPT", 2)
    answers = {"t1": "p1", "t2": "p2", "t3": "p3", "t4": ""}
    scripted = Scripted(lambda m: tuple(begun(b.turn_id, b.thread_id, answers[b.thread_id]) for b in m.begins))
    store = store_for(scripted)
    store.begin_direct([begin("u1", "t1"), begin("u2", "t2")])
    store.begin_direct([begin("u3", "t1")])  # used again: the most recent
    store.begin_direct([begin("u4", "t3"), begin("u5", "t4")])  # t2 is the oldest: forgotten; "" is not a project
    assert [store.project_of(t) for t in ("t1", "t2", "t3", "t4")] == ["p1", None, "p3", None]


# --- follow-up starts --------------------------------------------------------------------------------------------
def test_follow_up_starts_go_in_one_ask_and_become_the_machines_events() -> None:
    registry = TurnRegistry()
    registry.put("f1", "sink-f1")
    broken = StorageFullError("disk full")
    answers = (
        NextFollowUpStarted(followup=head("f1"), more=True, begun=begun("f1")),
        NextFollowUpStarted(),
        UnknownThreadError("unknown thread id 't3'"),
        broken,
    )
    scripted = Scripted(lambda message: answers)
    store = store_for(scripted, registry)
    effects = [ev.StartFollowUp(thread_id=t, include_manual=t == "t2") for t in ("t1", "t2", "t3", "t4")]
    with capture_events("turns.followup_start_failed") as log:
        outcomes = store.start_followups(effects)
    (asked,) = scripted.asked
    assert [(s.thread_id, s.include_manual) for s in asked.starts] == [
        ("t1", False),
        ("t2", True),
        ("t3", False),
        ("t4", False),
    ]
    retry_ids = [s.retry_turn_id for s in asked.starts]
    assert all(i.startswith("turn-") for i in retry_ids) and len(set(retry_ids)) == 4  # a new id each
    assert outcomes == [
        ev.FollowUpStarted(
            thread_id="t1", followup_id="f1", turn_id="f1", text="later", sink="sink-f1", more=True, settings=SETTINGS
        ),
        ev.FollowUpStarted(thread_id="t2"),  # none queued
        ev.FollowUpStarted(thread_id="t3"),  # the thread does not exist: no queue
        ev.FollowUpStarted(thread_id="t4", refused=True),
    ]
    assert log.of("turns.followup_start_failed") == [
        {"event": "turns.followup_start_failed", "level": "error", "thread": "t4", "error": repr(broken)}
    ]
    assert store.project_of("t1") == "p"


def test_a_started_follow_up_that_ran_before_runs_as_the_turn_the_storage_began() -> None:
    answer = NextFollowUpStarted(followup=head("f1"), more=False, begun=begun("turn-retry"))
    store = store_for(Scripted(lambda message: (answer,)))
    (outcome,) = store.start_followups([ev.StartFollowUp(thread_id="t1")])
    assert (outcome.followup_id, outcome.turn_id, outcome.more) == ("f1", "turn-retry", False)


def test_a_start_round_refused_whole_is_a_refused_start_for_every_thread() -> None:
    store = store_for(Scripted(lambda message: pykka.Timeout("past the deadline")))
    outcomes = store.start_followups([ev.StartFollowUp(thread_id="t1"), ev.StartFollowUp(thread_id="t2")])
    assert outcomes == [
        ev.FollowUpStarted(thread_id="t1", refused=True),
        ev.FollowUpStarted(thread_id="t2", refused=True),
    ]


# --- enqueues, finishes, cards, settings, follow-up states -------------------------------------------------------
def test_enqueues_go_in_one_ask_and_each_gets_none_or_its_error() -> None:
    used = StorageError("follow-up id 'q2' already exists")
    scripted = Scripted(lambda message: (head("q1"), used))
    store = store_for(scripted)
    effects = [ev.Enqueue(turn_id="q1", thread_id="t1", text="a"), ev.Enqueue(turn_id="q2", thread_id="t2", text="b")]
    assert store.enqueue(effects) == [None, used]
    assert scripted.asked == [
        EnqueueFollowUps(
            enqueues=(
                EnqueueFollowUp(followup_id="q1", thread_id="t1", text="a"),
                EnqueueFollowUp(followup_id="q2", thread_id="t2", text="b"),
            )
        )
    ]


def _ended(turn_id: str = "u1") -> Unpersisted:
    return Unpersisted(
        turn_id=turn_id,
        thread_id="t1",
        status="failed",
        text="partial",
        error="boom",
        worker_id=2,
        followup_id=None,
        sink=None,
    )


def test_a_finish_is_stored_or_refused_and_one_already_finished_counts_only_on_a_retry() -> None:
    record = _ended()
    scripted = Scripted()
    assert store_for(scripted).finish(record, retry=False) == ev.FinishStored(record=record, retry=False)
    assert scripted.asked == [
        FinishTurn(turn_id="u1", status="failed", assistant_text="partial", error="boom", worker_id=2)
    ]
    full = StorageFullError("disk full")
    refused = store_for(Scripted(lambda m: full)).finish(record, retry=True)
    assert refused == ev.FinishRefused(record=record, reason=repr(full), retry=True)
    landed = store_for(Scripted(lambda m: TurnAlreadyFinishedError("u1 is failed"))).finish(record, retry=True)
    assert landed == ev.FinishStored(record=record, retry=True)  # the earlier attempt landed after all
    with pytest.raises(TurnAlreadyFinishedError):  # a first attempt finding it finished is a bug: it escapes
        store_for(Scripted(lambda m: TurnAlreadyFinishedError("u1 is failed"))).finish(record, retry=False)


def test_a_card_is_true_when_stored_and_false_and_logged_when_refused() -> None:
    scripted = Scripted()
    assert store_for(scripted).card("t1", "u1", "approval", "run ls?") is True
    assert scripted.asked == [AddActionCard(thread_id="t1", turn_id="u1", kind="approval", text="run ls?")]
    full = StorageFullError("disk full")
    with capture_events("turns.card_failed") as log:
        assert store_for(Scripted(lambda m: full)).card("t1", "u1", "approval", "run ls?") is False
    assert log.of("turns.card_failed", turn="u1", kind="approval", error=repr(full))


def test_forgetting_options_sets_them_to_none_and_a_refusal_is_logged() -> None:
    scripted = Scripted()
    store_for(scripted).forget_options("t1", ("model", "effort"))
    assert scripted.asked == [UpdateThread(thread_id="t1", turn_settings={"model": None, "effort": None})]
    dead = pykka.ActorDeadError("stopped")
    with capture_events("turns.forget_options_failed") as log:
        store_for(Scripted(lambda m: dead)).forget_options("t1", ("model",))
    assert log.of("turns.forget_options_failed", thread="t1", keys=["model"], error=repr(dead))


def test_a_follow_ups_state_is_told_not_asked() -> None:
    scripted = Scripted()
    store_for(scripted).settle_followup(ev.SetFollowUp(followup_id="f1", state="failed", error="boom"))
    assert scripted.told == [SettleFollowUp(followup_id="f1", state="failed", error="boom")] and scripted.asked == []


# --- late answers ------------------------------------------------------------------------------------------------
def test_what_a_late_round_took_is_told_back_once_and_logged() -> None:
    scripted = Scripted()
    store = store_for(scripted)
    begins = BeginTurns(
        begins=(
            BeginTurn(turn_id="u1", thread_id="t1", user_text="a"),
            BeginTurn(turn_id="u2", thread_id="t2", user_text="b"),
        )
    )
    starts = StartNextFollowUps(
        starts=tuple(StartNextFollowUp(thread_id=t, retry_turn_id=f"new-{t}") for t in ("t1", "t2", "t3"))
    )
    started = (
        NextFollowUpStarted(followup=head("f1"), begun=begun("turn-r1")),
        NextFollowUpStarted(),
        StorageFullError("disk full"),
    )
    enqueues = EnqueueFollowUps(
        enqueues=(
            EnqueueFollowUp(followup_id="q1", thread_id="t1", text="a"),
            EnqueueFollowUp(followup_id="q2", thread_id="t1", text="b"),
        )
    )
    with capture_events("turns.taken_back") as log:
        store.take_back(begins, (begun("u1"), StorageFullError("disk full")))
        store.take_back(starts, started)
        store.take_back(enqueues, (StorageError("used"), head("q2")))
    assert scripted.told == [
        TakeBack(begun=(TakenBegin(turn_id="u1"),), enqueued=(), error=TAKEN_BACK_NOTE),
        TakeBack(begun=(TakenBegin(turn_id="turn-r1", followup_id="f1"),), enqueued=(), error=TAKEN_BACK_NOTE),
        TakeBack(begun=(), enqueued=("q2",), error=TAKEN_BACK_NOTE),
    ]
    assert [(e["ask"], e["turns"], e["followups"], e["level"]) for e in log.of("turns.taken_back")] == [
        ("BeginTurns", ["u1"], [], "warning"),
        ("StartNextFollowUps", ["turn-r1"], [], "warning"),
        ("EnqueueFollowUps", [], ["q2"], "warning"),
    ]


def test_a_late_answer_that_took_nothing_tells_nothing_back() -> None:
    scripted = Scripted()
    store = store_for(scripted)
    begins = BeginTurns(begins=(BeginTurn(turn_id="u1", thread_id="t1", user_text="a"),))
    with capture_events("turns.taken_back") as log:
        store.take_back(begins, StorageFullError("refused whole after all"))  # not a round's answers
        store.take_back(begins, (StorageFullError("refused"),))  # took nothing
        store.take_back(
            StartNextFollowUps(starts=(StartNextFollowUp(thread_id="t1", retry_turn_id="x"),)), (NextFollowUpStarted(),)
        )
        store.take_back(UpdateThread(thread_id="t1"), ("not a round",))  # not a round at all
    assert scripted.told == [] and log.of("turns.taken_back") == []
