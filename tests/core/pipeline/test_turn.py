"""The turn handle's states: HELD -> PLAYING -> DONE | INTERRUPTED | FAILED, HELD -> DISCARDED."""

from __future__ import annotations

import asyncio

import pytest

from opensips_ai_core.pipeline.timing import TurnTimer
from opensips_ai_core.pipeline.turn import Turn, TurnState
from tests.core.pipeline.fakes import FakeMedia

pytestmark = [pytest.mark.timeout(10)]


def new_turn(media: FakeMedia, *, held: bool = False) -> tuple[Turn, list[Turn]]:
    ended: list[Turn] = []
    turn = Turn("turn-test", media, TurnTimer(), user_text="hello", held=held)
    return turn, ended


async def speaks(turn: Turn, release: asyncio.Event | None = None) -> None:
    turn.play(b"\x01\x00" * 80)
    if release is not None:
        await release.wait()
    turn.play(b"\x02\x00" * 80)


async def test_a_turn_plays_its_audio_and_ends_done() -> None:
    media = FakeMedia()
    turn, ended = new_turn(media)
    assert turn.state is TurnState.PLAYING
    turn.start(speaks, ended.append)
    await turn.wait_for_work()
    assert turn.state is TurnState.DONE and ended == [turn]
    assert len(media.queued) == 2
    playout = asyncio.create_task(turn.wait_for_playout())
    await asyncio.sleep(0)
    assert not playout.done()  # DONE, but the caller has not heard it all yet
    media.play_out()
    assert await playout is TurnState.DONE


async def test_interrupt_cancels_the_work_and_ends_interrupted() -> None:
    media = FakeMedia()
    turn, ended = new_turn(media)
    release = asyncio.Event()
    turn.start(lambda t: speaks(t, release), ended.append)
    await asyncio.sleep(0)
    turn.in_flight.add("TTS")
    assert turn.working and turn.interrupt() == ["TTS"]
    assert await turn.wait_for_playout() is TurnState.INTERRUPTED
    assert turn.interrupted and turn.task.cancelled() and ended == [turn]
    assert turn.interrupt() == []  # nothing left to cancel


async def test_a_turn_cancelled_before_it_ran_still_ends() -> None:
    turn, ended = new_turn(FakeMedia())
    turn.start(speaks, ended.append)
    turn.interrupt()  # before the task's first step: its coroutine never runs
    await turn.wait_for_work()
    assert turn.state is TurnState.INTERRUPTED and ended == [turn]


async def test_an_error_ends_the_turn_failed() -> None:
    turn, ended = new_turn(FakeMedia())

    async def breaks(_turn: Turn) -> None:
        raise RuntimeError("boom")

    turn.start(breaks, ended.append)
    await turn.wait_for_work()
    assert turn.state is TurnState.FAILED and ended == [turn]


async def test_a_held_turn_keeps_its_audio_until_committed() -> None:
    media = FakeMedia()
    turn, ended = new_turn(media, held=True)
    release = asyncio.Event()
    turn.start(lambda t: speaks(t, release), ended.append)
    await asyncio.sleep(0)
    assert turn.held and len(turn.held_audio) == 1 and media.queued == []
    turn.commit()
    assert turn.state is TurnState.PLAYING and turn.held_audio == []
    assert len(media.queued) == 1
    release.set()
    await turn.wait_for_work()
    assert turn.state is TurnState.DONE and len(media.queued) == 2 and ended == [turn]


async def test_a_held_turn_that_finished_ends_when_committed() -> None:
    media = FakeMedia()
    turn, ended = new_turn(media, held=True)
    turn.start(speaks, ended.append)
    await turn.wait_for_work()
    # Its work is done, but nothing is recorded while it is held.
    assert turn.state is TurnState.HELD and ended == [] and len(turn.held_audio) == 2
    turn.commit()
    assert turn.state is TurnState.DONE and ended == [turn] and len(media.queued) == 2


async def test_a_discarded_turn_is_cancelled_and_leaves_nothing() -> None:
    media = FakeMedia()
    turn, ended = new_turn(media, held=True)
    release = asyncio.Event()
    turn.start(lambda t: speaks(t, release), ended.append)
    await asyncio.sleep(0)
    turn.discard()
    await turn.wait_for_work()
    assert turn.state is TurnState.DISCARDED and turn.discarded and turn.task.cancelled()
    assert ended == [] and turn.held_audio == [] and media.queued == []
    assert await turn.wait_for_playout() is TurnState.DISCARDED
    turn.play(b"\x00\x00")  # late audio of a discarded turn goes nowhere
    assert media.queued == []


async def test_commit_and_discard_only_apply_to_a_held_turn() -> None:
    turn, ended = new_turn(FakeMedia())
    turn.start(speaks, ended.append)
    await turn.wait_for_work()
    with pytest.raises(RuntimeError, match="commit of a done turn"):
        turn.commit()
    with pytest.raises(RuntimeError, match="discard of a done turn"):
        turn.discard()
