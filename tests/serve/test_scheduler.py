"""The server's scheduler and `Engine.generate` run one decode loop: the same tokens.

The scheduler runs as the server runs it (its own thread, requests joining a running batch),
without HTTP. The test model's context is 128 tokens, so the two longest requests slide.
"""

from __future__ import annotations

import asyncio
import threading

from buildlm.infer.requests import SamplingParams
from buildlm.serve.scheduler import Done, Failed, Scheduler

TEXT = (
    "I had always thought Jack Gisburn rather a cheap genius though a good fellow enough so "
    "it was no great surprise to me to hear that, in the height of his glory, he had dropped "
    "his painting, married a rich widow, and established himself in a villa on the Riviera. "
)


async def run_waves(scheduler: Scheduler, waves: list[list[tuple[list[int], SamplingParams]]]):
    """Submit the first wave; once it is decoding, the next one (so it joins a running batch).
    Returns each request's text, as its pieces arrived, and its row."""
    texts: list[str] = []
    rows = []
    first_piece = asyncio.Event()

    async def collect(ticket, index: int) -> None:
        async for event in ticket.events():
            assert not isinstance(event, Failed), event.message
            if isinstance(event, Done):
                return
            texts[index] += "".join(piece.text for piece in event)
            first_piece.set()

    tasks = []
    for wave in waves:
        # Hold the scheduler thread (a job) while the wave is queued: it joins between two
        # steps of the running batch, whatever the timing.
        gate = threading.Event()
        scheduler.call(gate.wait)
        for prompt, params in wave:
            ticket = scheduler.submit([prompt], [params])
            texts.append("")
            rows.append(ticket.rows[0])
            tasks.append(asyncio.create_task(collect(ticket, len(texts) - 1)))
        gate.set()
        await first_piece.wait()
    await asyncio.gather(*tasks)
    return texts, rows


def test_scheduler_and_engine_generate_give_the_same_tokens(engine):
    ids = engine.tokenizer.encode(TEXT * 6)
    greedy = dict(temperature=0.0, stop_token_ids=())
    waves = [
        [
            (ids[:5], SamplingParams(max_new_tokens=90, **greedy)),
            (
                ids[3:33],
                SamplingParams(
                    max_new_tokens=60, temperature=0.9, top_k=40, seed=3, stop_token_ids=()
                ),
            ),
            (ids[7:107], SamplingParams(max_new_tokens=50, frequency_penalty=0.5, **greedy)),
        ],
        [
            (
                ids[20:142],
                SamplingParams(
                    max_new_tokens=40, temperature=1.1, top_p=0.9, seed=11, stop_token_ids=()
                ),
            ),
            (ids[9:69], SamplingParams(max_new_tokens=30, **greedy)),
            (ids[1:13], SamplingParams(max_new_tokens=45, temperature=0.8, seed=5)),  # eot stops
        ],
    ]
    assert len(ids[20:142]) == 122 and engine.context_length == 128  # 122 + 40 slides
    scheduler = Scheduler(engine, max_batch_size=8)

    async def main():
        scheduler.start()
        try:
            return await run_waves(scheduler, waves)
        finally:
            scheduler.close()

    texts, rows = asyncio.run(main())
    stats = scheduler.stats
    assert stats.largest_batch == 6  # the second wave joined the first one's batch
    assert stats.window_slides >= 2 and stats.jobs_run == 2
    prompts = [prompt for wave in waves for prompt, _ in wave]
    params = [p for wave in waves for _, p in wave]
    want = engine.generate(prompts, params)
    assert [row.generated for row in rows] == [c.token_ids for c in want]
    assert [row.finish_reason for row in rows] == [c.finish_reason for c in want]
    assert texts == [c.text for c in want]
    assert len(set(texts)) == len(texts)  # distinct, so swapped rows would be caught
