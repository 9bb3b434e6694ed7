"""The FIFO queue lock and the task registry."""
from __future__ import annotations

import re
import threading
import time

import pytest

from modules import call_queue, shared

pytestmark = pytest.mark.timeout(30)


def test_task_id_format():
    ids = {call_queue.create_task_id("txt2img") for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"task\(txt2img-[A-Z0-9]{7}\)", x) for x in ids)


def test_fifo_lock_serves_waiters_in_arrival_order():
    lock = call_queue.FIFOLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for i in range(8):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        threads.append(t)
        while lock.waiting() < i + 2:  # the holder plus i + 1 waiters hold tickets
            time.sleep(0.001)
    lock.release()
    for t in threads:
        t.join(5)
    assert order == list(range(8))
    assert not lock.locked()


def test_fifo_lock_timeout_gives_the_turn_up():
    lock = call_queue.FIFOLock()
    lock.acquire()
    timed_out = []
    t = threading.Thread(target=lambda: timed_out.append(lock.acquire(timeout=0.05)))
    t.start()
    t.join(5)
    assert timed_out == [False]
    got = []
    t = threading.Thread(target=lambda: (got.append(lock.acquire(timeout=5)), lock.release()))
    t.start()
    time.sleep(0.05)
    lock.release()
    t.join(5)
    assert got == [True]
    assert not lock.locked()


def test_fifo_lock_is_reentrant_for_its_holder_only():
    lock = call_queue.FIFOLock()
    with lock:
        with lock:  # e.g. a wrap_queued_call option hook inside a queued route
            assert lock.locked()
        assert lock.locked()
        errors = []
        t = threading.Thread(target=lambda: errors.append(pytest.raises(RuntimeError, lock.release)))
        t.start()
        t.join(5)
        assert errors
    assert not lock.locked()
    assert call_queue.wrap_queued_call(lambda x: x + 1)(1) == 2


def test_queued_job_registers_and_begins_state():
    shared.state.interrupt()  # a stale interrupt from before this job (nothing runs: the idle state)
    seen = {}
    with call_queue.queued_job("task(test-AAAAAAA)", "job") as ctx:
        seen["status"] = call_queue.task_status("task(test-AAAAAAA)")
        seen["interrupted"] = shared.state.interrupted
        seen["task_id"] = shared.state.task_id
        seen["own"] = shared.state.context is ctx
    shared.state.reset()
    assert seen == {"status": (True, False, False), "interrupted": False, "task_id": "task(test-AAAAAAA)",
                    "own": True}
    assert call_queue.task_status("task(test-AAAAAAA)") == (False, False, True)


def test_pending_task_is_queued_until_its_turn():
    lock_holder = threading.Event()
    release = threading.Event()

    def first():
        with call_queue.queued_job("task(test-FIRST00)", "job"):
            lock_holder.set()
            release.wait(5)

    t1 = threading.Thread(target=first)
    t1.start()
    lock_holder.wait(5)
    started = threading.Event()

    def second():
        started.set()
        with call_queue.queued_job("task(test-SECOND0)", "job"):
            pass

    t2 = threading.Thread(target=second)
    t2.start()
    started.wait(5)
    deadline = time.time() + 5
    while call_queue.task_status("task(test-SECOND0)")[1] is False and time.time() < deadline:
        time.sleep(0.005)
    assert call_queue.task_status("task(test-SECOND0)") == (False, True, False)
    assert call_queue.queue_position("task(test-SECOND0)") == 0
    release.set()
    t1.join(5)
    t2.join(5)
    assert call_queue.task_status("task(test-SECOND0)") == (False, False, True)


def test_wrap_gradio_gpu_call_runs_as_a_queued_task():
    seen = {}

    def handler(id_task, value):
        seen["status"] = call_queue.task_status(id_task)
        return value * 2

    assert call_queue.wrap_gradio_gpu_call(handler)("task(gradio-HANDLER)", 21) == 42
    assert seen["status"] == (True, False, False)
    assert call_queue.task_status("task(gradio-HANDLER)") == (False, False, True)


def test_a1111_image_helpers_importable_from_api():
    from modules.api.api import decode_base64_to_image, encode_pil_to_base64
    from PIL import Image
    image = Image.new("RGB", (4, 4), "blue")
    assert decode_base64_to_image(encode_pil_to_base64(image)).getpixel((0, 0)) == (0, 0, 255)
