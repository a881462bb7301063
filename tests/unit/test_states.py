import itertools

import pytest

from pink.states import CLAIMED, TERMINAL, TRANSITIONS, JobState, can_transition

S = JobState

LEGAL = {
    (S.UPLOADING, S.QUEUED), (S.UPLOADING, S.FAILED), (S.UPLOADING, S.CANCELLED),
    (S.QUEUED, S.STARTING), (S.QUEUED, S.FAILED), (S.QUEUED, S.CANCELLED),
    (S.STARTING, S.RUNNING), (S.STARTING, S.FAILED), (S.STARTING, S.CANCELLED), (S.STARTING, S.LOST),
    (S.RUNNING, S.EXPORTING), (S.RUNNING, S.FAILED), (S.RUNNING, S.CANCELLED), (S.RUNNING, S.LOST),
    (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.TIMED_OUT),  # no archive to make (output none)
    (S.EXPORTING, S.SUCCEEDED), (S.EXPORTING, S.FAILED), (S.EXPORTING, S.TIMED_OUT),
    (S.EXPORTING, S.CANCELLED), (S.EXPORTING, S.LOST),
}


@pytest.mark.parametrize("old,new", list(itertools.product(S, S)))
def test_every_pair_is_legal_exactly_when_listed(old, new):
    assert can_transition(old, new) == ((old, new) in LEGAL)


def test_terminal_states_have_no_way_out():
    assert TERMINAL == {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.LOST}
    for state in TERMINAL:
        assert state.terminal
        assert state not in TRANSITIONS


def test_cancel_from_every_non_terminal_state_and_lost_only_when_claimed():
    for state in set(S) - TERMINAL:
        assert can_transition(state, S.CANCELLED)
        assert can_transition(state, S.LOST) == (state in CLAIMED)


def test_starting_is_entered_only_from_queued():
    assert [s for s in S if can_transition(s, S.STARTING)] == [S.QUEUED]
