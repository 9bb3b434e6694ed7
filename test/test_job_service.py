"""The job service in one process: run contexts kept apart, the store's states, bad jobs.

Two jobs run side by side in one process (the test-only two-thread executor): each sees only its own
progress and cancellation, and interrupting one leaves the other's image equal to its golden.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

from modules import errors, shared
from modules.runtime import context, executors
from modules.runtime.job_service import Conflict, JobService
from modules.runtime.job_store import DONE, FAILED, INTERRUPTED, PENDING, JobStore
from job_helpers import golden_bytes, golden_request, prepared, record_runner_calls, wait_status

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


@pytest.fixture()
def defaults(serena):
    from golden import harness
    with harness.default_options():
        yield


@pytest.fixture()
def make_service(tmp_path, serena):
    made = []

    def make(threads: int = 1, folder: str | None = None) -> JobService:
        service = JobService(JobStore(folder or str(tmp_path / "jobs")), executors.InProcessExecutor(threads)).start()
        made.append(service)
        return service
    yield make
    for service in made:
        service.stop()
        service.store.close()


def test_two_jobs_at_once_each_see_only_their_own_progress_and_cancellation(make_service, defaults):
    """Two golden jobs run at the same time on two threads. Inside each, `shared.state` and the run
    context are that job's own (steps, task id); interrupting one at its third step stops only it,
    and the other's image is byte-identical to its golden."""
    service = make_service(threads=2)
    service.pause()
    slow = prepared("txt2img", {**golden_request("txt2img-euler-64"), "steps": 40, "seed": 99})
    kept = prepared("txt2img", golden_request("txt2img-dpmpp-2m-karras"))
    a = service.submit("txt2img", slow, job_id="task(test-SLOW)")
    b = service.submit("txt2img", kept, job_id="task(test-KEPT)")
    seen: dict[str, list] = {a.id: [], b.id: []}
    both_running = threading.Event()

    def watch(job_id: str):
        def on_event(event):
            if event.type != "progress" or event.data["kind"] != "step":
                return
            state = shared.state  # in the job's own thread: resolves to the job's context
            seen[job_id].append((event.data["step"], event.data["steps"], state.task_id, state.sampling_steps,
                                 context.current().task_id))
            if len(service.running_ids()) == 2:
                both_running.set()
            if job_id == a.id and event.data["step"] == 3:
                both_running.wait(30)
                service.cancel(a.id)
        return on_event
    service.subscribe(a.id, watch(a.id))
    service.subscribe(b.id, watch(b.id))
    service.resume()
    assert wait_status(service, b.id) == DONE
    assert wait_status(service, a.id) == INTERRUPTED
    assert both_running.is_set(), "the two jobs never ran at the same time"
    assert {(s, task, task2) for _, s, task, _, task2 in seen[a.id]} == {(40, a.id, a.id)}
    assert {(s, task, task2) for _, s, task, _, task2 in seen[b.id]} == {(6, b.id, b.id)}
    assert all(steps == own for _, own, _, steps, _ in seen[a.id] + seen[b.id])
    assert max(step for step, *_ in seen[a.id]) < 40, "the interrupt stopped the slow job early"
    assert [step for step, *_ in seen[b.id]] == list(range(1, 7))
    assert [data for _, data in service.result_files(b.id)] == golden_bytes("txt2img-dpmpp-2m-karras")
    assert service.get(a.id).error == "interrupted"


def test_a_queued_job_reaches_the_runner_once_with_golden_bytes(make_service, defaults, monkeypatch):
    calls = record_runner_calls(monkeypatch)
    service = make_service()
    output = service.run("txt2img", prepared("txt2img", golden_request("txt2img-euler-64")))
    assert len(calls) == 1
    assert output.images == golden_bytes("txt2img-euler-64")


def test_states_positions_and_controls(make_service, serena):
    service = make_service()
    service.pause()
    request = prepared("txt2img", {"prompt": "a cube", "width": 64, "height": 64, "steps": 2, "seed": 5})
    ids = [service.submit("txt2img", request).id for _ in range(3)]
    assert [service.position(i) for i in ids] == [0, 1, 2]
    service.move(ids[2], "top")
    assert service.store.pending_ids() == [ids[2], ids[0], ids[1]]
    service.move(ids[2], ids[1])  # just before ids[1]
    assert service.store.pending_ids() == [ids[0], ids[2], ids[1]]
    service.move(ids[0], "bottom")
    assert service.store.pending_ids() == [ids[2], ids[1], ids[0]]
    cancelled = service.cancel(ids[1])
    assert cancelled.status == INTERRUPTED and cancelled.error == "cancelled before it ran"
    with pytest.raises(Conflict):
        service.cancel(ids[1])
    with pytest.raises(errors.NotFound):
        service.get("task(nope)")
    with pytest.raises(Conflict):
        service.submit("txt2img", request, job_id=ids[0])
    with pytest.raises(errors.InvalidParameter):
        service.submit("txt2img", request, job_id="../escape")
    service.resume()
    assert wait_status(service, ids[2]) == DONE and wait_status(service, ids[0]) == DONE
    record = service.get(ids[0])
    assert record.result["images"] == ["00000.png"] and record.started <= record.finished
    assert service.requeue(ids[1]).status == PENDING
    assert wait_status(service, ids[1]) == DONE
    assert [service.get(i).status for i in ids] == [DONE, DONE, DONE]


def test_a_malformed_job_in_the_store_fails_and_the_queue_goes_on(make_service, serena, tmp_path):
    """A row edited by hand (request not JSON; unknown kind; a field the model refuses) is failed with
    the reason when its turn comes; the jobs behind it run."""
    service = make_service()
    service.pause()
    good = prepared("txt2img", {"prompt": "a cube", "width": 64, "height": 64, "steps": 2, "seed": 5})
    bad_json = service.submit("txt2img", good).id
    bad_kind = service.submit("txt2img", good).id
    bad_field = service.submit("txt2img", good).id
    ok = service.submit("txt2img", good).id
    db = sqlite3.connect(service.store.path)
    db.execute("UPDATE jobs SET request = ? WHERE id = ?", ("{not json", bad_json))
    db.execute("UPDATE jobs SET kind = ? WHERE id = ?", ("paint", bad_kind))
    db.execute("UPDATE jobs SET request = ? WHERE id = ?", ('{"steps": "many"}', bad_field))
    db.commit()
    db.close()
    service.resume()
    assert wait_status(service, ok) == DONE
    for job_id, words in ((bad_json, "malformed job"), (bad_kind, "unknown kind"), (bad_field, "steps")):
        assert service.store.status_of(job_id) == FAILED, (job_id, sqlite3.connect(service.store.path).execute("SELECT id, kind, status, error, request FROM jobs").fetchall())
        error = sqlite3.connect(service.store.path).execute("SELECT error FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        assert words in error, error


def test_a_failed_job_reports_its_error_and_the_next_job_is_correct(make_service, defaults):
    service = make_service()
    bad = {**golden_request("txt2img-euler-64"), "sampler_name": "Euler"}
    bad_id = service.submit("txt2img", {**prepared("txt2img", bad), "width": 4096}).id  # past validation
    assert wait_status(service, bad_id) == FAILED
    assert "width" in service.get(bad_id).error
    output = service.run("txt2img", prepared("txt2img", golden_request("txt2img-euler-64")))
    assert output.images == golden_bytes("txt2img-euler-64")


def test_running_jobs_left_by_a_dead_process_are_failed_at_start(tmp_path, serena):
    folder = str(tmp_path / "jobs")
    store = JobStore(folder)
    from modules.runtime.job_store import JobRecord
    store.add(JobRecord(id="task(was-running)", kind="txt2img", request={"prompt": "x"}))
    assert store.claim("task(was-running)")
    store.close()
    service = JobService(JobStore(folder), executors.InProcessExecutor())
    service.pause = lambda: None
    service.store.set_meta("paused", "1")  # nothing else may run in this test
    service.start()
    try:
        record = service.get("task(was-running)")
        assert record.status == FAILED and "server stopped" in record.error
        assert service.recovered == ["task(was-running)"]
    finally:
        service.stop()
        service.store.close()


def test_only_the_newest_finished_jobs_are_kept(make_service, serena):
    from job_helpers import options_set
    service = make_service()
    request = prepared("txt2img", {"prompt": "a cube", "width": 64, "height": 64, "steps": 1, "seed": 5})
    with options_set(jobs_keep_finished=2):
        ids = [service.run("txt2img", request, job_id=f"task(keep-{n})") and f"task(keep-{n})" for n in range(4)]
        assert service.store.ids() == ids[2:]
        assert sorted(os.listdir(os.path.join(service.store.folder, "results"))) == ids[2:]


def test_a_paused_queue_holds_queued_jobs_but_not_the_ones_someone_waits_for(make_service, serena):
    """Pausing (agent-scheduler's queue/pause) holds the queued jobs; the UI's Generate and the
    synchronous /sdapi/v1 routes still get their images, so a paused queue never hangs the page."""
    service = make_service()
    service.pause()
    request = prepared("txt2img", {"prompt": "a cube", "width": 64, "height": 64, "steps": 1, "seed": 5})
    queued = service.submit("txt2img", request, source="agent-scheduler").id
    for source in ("ui", "sdapi"):
        assert len(service.run("txt2img", request, source=source).images) == 1
    assert service.store.status_of(queued) == PENDING
    service.resume()
    assert wait_status(service, queued) == DONE
