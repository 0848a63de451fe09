"""Decode memory: the budget's accounting, and large JPEGs decoded reduced (draft mode)."""

import asyncio
import io
import threading

import numpy as np
import pytest
from mindscope.dataplane.budget import DecodeBudget
from mindscope.dataplane.decoding import DecodeLimits, decode_bytes, decode_image_bytes, finish_decode, open_image
from mindscope.engine.images import to_rgb_array
from mindscope.errors import Overloaded
from PIL import Image

MAX_PIXELS = 4096 * 4096


def test_a_reservation_waits_for_room_and_the_last_one_out_gives_memory_back():
    trims: list[int] = []
    budget = DecodeBudget(100, wait_s=0, trim_after_bytes=100, release_memory=lambda: trims.append(1))
    with budget.reserve(60):
        with pytest.raises(Overloaded) as refused:
            with budget.reserve(60):
                pass
        assert refused.value.details == {"needed_bytes": 60, "in_use_bytes": 60, "budget_bytes": 100}
        with budget.reserve(40):
            assert budget.in_use == 100
    assert (budget.in_use, budget.peak, budget.refused) == (0, 100, 1)
    assert trims == [1]  # 100 bytes went through, and the last reservation out released memory
    with budget.reserve(500):  # larger than the whole budget: it may run alone
        assert budget.in_use == 500
    assert len(trims) == 2


def test_a_waiting_reservation_runs_as_soon_as_room_comes_free():
    budget = DecodeBudget(100, wait_s=120, release_memory=lambda: None)
    first_in, let_go, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with budget.reserve(80):
            first_in.set()
            let_go.wait(120)

    def second() -> None:
        with budget.reserve(80):
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_in.wait(60)
    threads[1].start()
    assert not second_in.wait(0.2)  # no room while the first holds 80 of 100
    let_go.set()
    assert second_in.wait(60)
    for thread in threads:
        thread.join()
    assert budget.in_use == 0 and budget.refused == 0


def _photo(size: int) -> bytes:
    """A smooth, colourful picture (JPEG's home ground), `size` pixels square."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rgb = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_large_jpeg_decodes_reduced_to_nearly_the_same_input():
    data = _photo(4096)
    budget = DecodeBudget(10**9, release_memory=lambda: None)
    decoded = finish_decode(open_image(data, MAX_PIXELS), DecodeLimits((32, 32, 3), MAX_PIXELS, budget=budget))
    # libjpeg decoded it at 1/8 per side: 512x512, 1 MiB reserved instead of 64 MiB.
    assert budget.peak == decode_bytes((512, 512), "RGB")
    assert (decoded.info.width, decoded.info.height) == (4096, 4096)
    with Image.open(io.BytesIO(data)) as full:
        reference = to_rgb_array(full, (32, 32)) / 255.0
    assert np.abs(decoded.pixels - reference).max() < 3 / 255


def test_small_and_mid_sized_jpegs_are_not_reduced():
    for size in (32, 255):
        data = _photo(size)
        with Image.open(io.BytesIO(data)) as full:
            reference = to_rgb_array(full, (32, 32)) / 255.0
        assert np.abs(decode_image_bytes(data, DecodeLimits((32, 32, 3), MAX_PIXELS)).pixels - reference).max() < 1e-6


def test_the_event_loop_waits_for_room_without_a_thread():
    budget = DecodeBudget(100, wait_s=120, release_memory=lambda: None)
    held, let_go = threading.Event(), threading.Event()

    def hold() -> None:
        with budget.reserve(80):
            held.set()
            let_go.wait(120)

    async def reserve_when_free() -> int:
        threading.Timer(0.1, let_go.set).start()  # room comes free while the loop waits
        async with budget.reserve_async(80):
            return budget.in_use

    async def refused_at_once() -> None:
        impatient = DecodeBudget(100, wait_s=0, release_memory=lambda: None)
        with impatient.reserve(80):
            with pytest.raises(Overloaded):
                async with impatient.reserve_async(80):
                    pass

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(60)
    assert asyncio.run(reserve_when_free()) == 80
    holder.join()
    assert budget.in_use == 0
    asyncio.run(refused_at_once())
