"""The Ray executor (`--executor ray`): queued jobs run on Ray worker processes, one job per worker.

Each worker is a Ray actor (:class:`SerenaWorker`, one CPU, one GPU where the workers run on
GPUs) that initialises Serena's runtime once — options, checkpoint registry, scripts, model —
with the server's own flags, then runs jobs with `jobs.execute`, the same call the in-process
executor makes, so every job reaches `ProcessingRunner.run` inside the worker. The job service
is unchanged: it asks :class:`RayExecutor` for a slot (model affinity: a worker that already has
the job's checkpoint loaded wins) and calls :meth:`RayExecutor.run`, which streams the job's
events back from the worker (a Ray streaming generator):

- ``("progress", [data, ...])``: every progress event of the job's run context, in order, sent in
  batches of up to `PROGRESS_BATCH_S` (each object streamed costs the server ≈ 0.2 ms of CPU:
  one per sampling step would be most of the server's share of a job),
- ``("preview", (id, png))`` every `show_progress_every_n_steps` steps when `live_previews_enable`,
- ``("output", (JobOutput, seconds in jobs.execute))`` at the end (images encoded in the worker,
  exactly as the API returns them; the time goes to :attr:`RayExecutor.job_times`), or
  ``("error", exception)``: the job's own error, so a `SerenaError` keeps its type and
  HTTP status.

On the server, :meth:`RayExecutor.run` mirrors the progress into a run context of its own
(`context.activate`), so `/sdapi/v1/progress`, `/internal/progress` and `/sdapi/v1/interrupt`
see and control a Ray job as they do an in-process one.

What each job carries besides its request: the checkpoint the service resolved for it (the worker
switches to it and keeps it, which is what makes affinity pay off) and the server's option values
(`shared.opts.data`), applied in the worker for that job only, so a setting changed on the server
reaches the next job on every worker.

A worker that dies while it runs a job (killed, out of memory, a crash in native code) fails that
job with :class:`executors.WorkerLost`; it is not retried on another worker, because whatever
killed the first worker could kill the next one. The dead worker's slot is taken out of service
and the other workers go on; no replacement is started (restart the server to get it back). A
worker that dies while idle is found by a ping when a job is about to be given to it, and the job
goes to another worker.
"""
from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import io
import logging
import os
import pickle
import queue
import sys
import threading
import time
from typing import Any, Callable, Iterator

from modules.runtime import context, executors, jobs
from modules.runtime.executors import Emit, Slot, WorkerLost
from modules.runtime.job_store import JobRecord

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The repository root: on every Ray node Serena must be installed at this same path."""

WORKER_START_TIMEOUT_S = 300.0
WORKER_NICENESS_ENV = "RAY_worker_niceness"
PING_TIMEOUT_S = 10.0
PROGRESS_BATCH_S = 0.1
"""A worker sends the progress events of up to this long together (A1111's page polls every 0.5-1 s)."""
NOT_SENT_OPTIONS = ("sd_model_checkpoint", "sd_checkpoint_hash")
"""Options that describe the server's own loaded model: a worker has its own (the job's checkpoint
travels separately)."""


# --- in the worker process ----------------------------------------------------------------------------
class SerenaWorker:
    """One Ray worker process with Serena's runtime, initialised once in `__init__`.

    Args:
        name: the worker's name (its slot's name on the server), used in messages.
        flags: the server's parsed flags (`argparse.Namespace`), or an argv list to parse.
        torch_threads: torch's intra-op threads in this process; None leaves torch's default.
        cwd: the server's working folder (relative flags such as `--data-dir data` resolve against
            it), where it exists on this node.
        checkpoint: the title of the checkpoint to load first (the server's selected one); None:
            the one the options select, as `webui.initialize` would.
    """

    def __init__(self, name: str, flags: argparse.Namespace | list[str], torch_threads: int | None,
                 cwd: str | None = None, checkpoint: str | None = None) -> None:
        began = time.monotonic()
        if ROOT not in sys.path:
            sys.path.insert(0, ROOT)
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)  # relative folder flags resolve as on the server
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        import webui
        from modules import cmd_args
        ns = copy.copy(flags) if isinstance(flags, argparse.Namespace) else cmd_args.parse(list(flags), environ={})
        ns.skip_install = True  # the server ran the extensions' installers already
        ns.executor = "local"  # a worker never starts workers of its own
        webui.initialize(ns, load_model=False)
        from modules import sd_models
        sd_models.load_model(sd_models.get_closet_checkpoint_match(checkpoint) if checkpoint else None)
        self.name = name
        self.init_s = time.monotonic() - began
        self._lock = threading.Lock()
        self._running: dict[str, context.RunContext] = {}  # job id → its run context, while it runs
        self._early_cancel: dict[str, str] = {}  # job id → cancel kind asked before the job started
        self._runner_calls: list[int] | None = None

    def ping(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        """pid, node, loaded checkpoint title and torch threads of this worker."""
        import socket

        import torch
        return {"name": self.name, "pid": os.getpid(), "host": socket.gethostname(), "init_s": self.init_s,
                "checkpoint": _loaded_checkpoint(), "torch_threads": torch.get_num_threads()}

    def run(self, job_id: str, kind: str, request: dict[str, Any], ui: bool, checkpoint: str | None,
            options: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """Run one job; a Ray streaming generator of ``(event, data)`` (see the module docstring).
        The job runs in a thread of its own; this generator's thread forwards its events and
        decodes the live previews, so the job never waits for either."""
        from modules import shared
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        started: dict[str, context.RunContext] = {}
        overrides = self._job_options(options)

        def on_start(ctx: context.RunContext) -> None:
            ctx.state  # noqa: B018 - made here, in the job's thread, before the preview thread reads it
            started["ctx"] = ctx
            with self._lock:
                self._running[job_id] = ctx
                early = self._early_cancel.pop(job_id, None)
            if early is not None:
                getattr(ctx.cancel, early)()
            ctx.progress.subscribe(lambda event: events.put(("progress", executors.progress_data(event))))

        def work() -> None:
            try:
                began = time.perf_counter()
                with shared.opts.override(overrides):
                    self._use_checkpoint(checkpoint)
                    output = jobs.execute(job_id, kind, request, ui=ui, on_start=on_start)
                events.put(("output", (output.without_processed(), time.perf_counter() - began)))
            except BaseException as e:  # noqa: BLE001 - sent to the server, which fails the job
                log.error("job %s failed in worker %s", job_id, self.name, exc_info=True)
                events.put(("error", portable_error(e)))

        thread = threading.Thread(target=work, name=f"serena-ray-job-{job_id}", daemon=True)
        thread.start()
        last_preview = 0
        try:
            while True:
                batch, final = _next_batch(events, PROGRESS_BATCH_S)
                if batch:
                    yield "progress", batch
                if final is not None:
                    yield final
                    return
                if "ctx" in started:
                    with shared.opts.override(overrides):
                        preview_id, png = executors.preview_png(started["ctx"].state)
                    if png is not None and preview_id != last_preview:
                        last_preview = preview_id
                        yield "preview", (preview_id, png)
        finally:
            thread.join()
            with self._lock:
                self._running.pop(job_id, None)
                self._early_cancel.pop(job_id, None)

    def cancel(self, job_id: str, kind: str = "interrupt") -> bool:
        """`interrupt` / `skip` / `stop_generating` job `job_id`; a job that has not started yet
        gets it when it starts. True when the job was running."""
        with self._lock:
            ctx = self._running.get(job_id)
            if ctx is None:
                self._early_cancel[job_id] = kind
        if ctx is not None:
            getattr(ctx.cancel, kind)()
        return ctx is not None

    def test_hook_runner_calls(self) -> int:
        """TEST-ONLY hook: how many times `ProcessingRunner.run` was called in this worker since the
        first call of this method (which installs the counting wrapper)."""
        from modules.runtime.runner import ProcessingRunner
        if self._runner_calls is None:
            calls = self._runner_calls = [0]
            original = ProcessingRunner.run

            def counted(runner: ProcessingRunner, request: Any) -> Any:
                calls[0] += 1
                return original(runner, request)
            ProcessingRunner.run = counted
        return self._runner_calls[0]

    def _job_options(self, server_options: dict[str, Any]) -> dict[str, Any]:
        """The server's option values as this job's overrides; an option this worker has set and the
        server has not goes back to its default."""
        from modules import shared
        labels = shared.opts.data_labels
        values = {key: shared.opts.get_default(key) for key in shared.opts.data if key in labels}
        values.update({key: value for key, value in server_options.items() if key in labels})
        for key in NOT_SENT_OPTIONS:
            values.pop(key, None)
        return values

    def _use_checkpoint(self, title: str | None) -> None:
        """Load checkpoint `title` unless it is loaded already (it stays loaded for later jobs).

        Raises:
            errors.CheckpointNotFound: no such checkpoint here, even after a rescan of the models
                folder (on a multi-node cluster: the folder is not shared with the server).
        """
        from modules import errors, sd_models, shared
        if not title or _loaded_checkpoint() == title:
            return
        info = sd_models.get_closet_checkpoint_match(title)
        if info is None:
            sd_models.list_models()  # a file added to the models folder after this worker started
            info = sd_models.get_closet_checkpoint_match(title)
        if info is None:
            raise errors.CheckpointNotFound(
                f"worker {self.name}: checkpoint {title!r} is not in {shared.data_paths.sd_model_dir}; "
                "every worker needs the server's models folder at the same path", field="sd_model_checkpoint")
        sd_models.reload_model_weights(info=info)


def _next_batch(events: queue.Queue, window_s: float) -> tuple[list[dict[str, Any]], tuple[str, Any] | None]:
    """The progress events that arrive within `window_s` of the first one (every one, in order),
    and the final event ("output" / "error") if it came meanwhile: one Ray object per batch
    instead of one per step keeps the stream's cost per job small."""
    batch: list[dict[str, Any]] = []
    deadline = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            event, data = events.get(timeout=timeout)
        except queue.Empty:
            return batch, None
        if event != "progress":
            return batch, (event, data)
        batch.append(data)
        if deadline is None:
            deadline = time.monotonic() + window_s


def _loaded_checkpoint() -> str | None:
    from modules import sd_models
    return getattr(getattr(sd_models.model_data.sd_model, "sd_checkpoint_info", None), "title", None)


def portable_error(error: BaseException) -> BaseException:
    """`error` itself when it survives pickling unchanged (SerenaError subclasses do, keeping their
    HTTP status); otherwise a RuntimeError that names its type and message."""
    try:
        copied = pickle.loads(pickle.dumps(error))
        if type(copied) is type(error) and str(copied) == str(error):
            return error
    except Exception:  # noqa: BLE001 - anything that does not pickle is described instead
        pass
    return RuntimeError(f"{type(error).__name__}: {error}")


# --- on the server ------------------------------------------------------------------------------------
class _ForwardedCancel(context.CancelToken):
    """The mirror context's cancel token: a request (A1111's /interrupt, the UI's buttons, the job
    service) is recorded here and forwarded to the worker that runs the job."""

    __slots__ = ("_forward",)

    def __init__(self, forward: Callable[[str], None] | None = None) -> None:
        super().__init__()
        if forward is not None or not hasattr(self, "_forward"):  # `State.reset()` re-inits: keep it
            self._forward = forward

    def _send(self, kind: str) -> None:
        if self._forward is not None:
            self._forward(kind)

    def interrupt(self) -> None:
        super().interrupt()
        self._send("interrupt")

    def skip(self) -> None:
        super().skip()
        self._send("skip")

    def stop_generating(self) -> None:
        super().stop_generating()
        self._send("stop_generating")


@dataclasses.dataclass(frozen=True)
class JobTiming:
    """Where a finished Ray job's time went: `run_s` from the call to the worker to its result on
    the server, `execute_s` inside the worker's `jobs.execute` (plus a checkpoint switch); the
    difference is what the Ray path adds (call, options, event stream, result transfer)."""

    job_id: str
    worker: str
    run_s: float
    execute_s: float

    @property
    def overhead_s(self) -> float:
        return self.run_s - self.execute_s


class RayExecutor:
    """Runs jobs on Ray worker actors, one slot per worker.

    Args:
        workers: how many worker actors to start.
        address: Ray cluster to join ("auto", "ray://head:10001", …); None starts a local Ray
            instance for this process with `num_cpus=workers` (stopped again by :meth:`stop`).
            When Ray is already initialised in this process, that instance is used as it is.
        worker_flags: the flags each worker initialises Serena with — an argv list, or the
            server's parsed `argparse.Namespace` (`shared.cmd_opts`, the default).
        torch_threads: torch threads per worker; default: this process's torch threads divided
            among the workers of a local instance (at least 1), Ray's default on a joined cluster.
        num_gpus: GPUs per worker; default: 0 with `--use-cpu all` or without CUDA, else a local
            instance's GPUs shared among its workers (at most 1 each), 1 each on a joined cluster.
    """

    name = "ray"
    registers_tasks = False  # the job service registers the task in `call_queue` itself

    def __init__(self, workers: int = 1, address: str | None = None,
                 worker_flags: argparse.Namespace | list[str] | None = None, torch_threads: int | None = None,
                 num_gpus: float | None = None, start_timeout: float = WORKER_START_TIMEOUT_S) -> None:
        if int(workers) < 1:
            from modules import errors
            raise errors.InvalidParameter(f"--ray-workers must be at least 1, got {workers}", field="ray_workers")
        self.workers = int(workers)
        self.address = address
        self.worker_flags = worker_flags
        self.torch_threads = torch_threads
        self.num_gpus = num_gpus
        self.start_timeout = start_timeout
        self.worker_info: dict[str, dict[str, Any]] = {}
        self._owns_ray = False
        self._lock = threading.Lock()
        self._slots: list[Slot] = []
        self._mirrors: dict[str, context.RunContext] = {}  # slot name → the running job's mirror context
        self._previews: dict[str, tuple[int, bytes | None]] = {}
        self.job_times: collections.deque[JobTiming] = collections.deque(maxlen=256)

    @classmethod
    def from_cmd_opts(cls, cmd_opts: argparse.Namespace) -> "RayExecutor":
        """The executor `--executor ray --ray-address … --ray-workers N` asks for."""
        return cls(workers=getattr(cmd_opts, "ray_workers", None) or 1,
                   address=getattr(cmd_opts, "ray_address", None), worker_flags=cmd_opts)

    # --- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or join) Ray and the workers; returns when every worker is ready.

        Raises:
            RuntimeError: a worker failed to initialise or was not ready within `start_timeout`.
        """
        import ray

        from modules.runtime.job_service import requested_checkpoint
        local = self.address is None
        if not ray.is_initialized():
            if local:
                # Ray starts workers at niceness 15; here they do the server's own work, so they get
                # the server's priority (on a busy machine, nice 15 workers ran ~10 % slower).
                os.environ.setdefault(WORKER_NICENESS_ENV, "0")
                ray.init(num_cpus=self.workers, num_gpus=_local_gpus(self._flags()), include_dashboard=False)
            else:
                ray.init(address=self.address)
            self._owns_ray = True
        actor = ray.remote(SerenaWorker)
        threads = self.torch_threads if self.torch_threads is not None else (_local_threads(self.workers)
                                                                             if local else None)
        gpus = self.num_gpus if self.num_gpus is not None else _worker_gpus(self._flags(), self.workers, local)
        runtime_env = {"env_vars": {"PYTHONPATH": _python_path(), "HF_HUB_OFFLINE": "1"}}
        handles = {}
        for i in range(self.workers):
            name = f"ray-{i}"
            handles[name] = actor.options(num_cpus=1, num_gpus=gpus, max_concurrency=4, runtime_env=runtime_env).remote(
                name, self._flags(), threads, os.getcwd(), requested_checkpoint({}))
        names = list(handles)
        try:
            infos = ray.get([handles[n].info.remote() for n in names], timeout=self.start_timeout)
        except Exception as e:
            for handle in handles.values():
                ray.kill(handle)
            raise RuntimeError(f"Ray workers did not start: {e}") from e
        with self._lock:
            for name, info in zip(names, infos):
                self.worker_info[name] = info
                self._slots.append(Slot(name, checkpoint=info["checkpoint"], handle=handles[name]))
        log.info("Ray executor: %d workers ready (%s)", len(names),
                 ", ".join(f"{i['name']} pid {i['pid']} on {i['host']}, {i['init_s']:.1f} s" for i in infos))

    def stop(self) -> None:
        """Kill the workers; shut Ray down if this executor started it."""
        import ray
        with self._lock:
            slots, self._slots = list(self._slots), []
        for slot in slots:
            if ray.is_initialized():
                ray.kill(slot.handle)
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def _flags(self) -> argparse.Namespace | list[str]:
        if self.worker_flags is not None:
            return self.worker_flags
        from modules import shared
        return shared.cmd_opts

    # --- slots ---------------------------------------------------------------------------------
    def slots(self) -> list[Slot]:
        with self._lock:
            return list(self._slots)

    def acquire(self, job: JobRecord) -> Slot | None:
        """A free worker for `job` (`executors.choose_slot`: model affinity by checkpoint file); a
        worker found dead on the way is taken out of service and the next one is tried."""
        while True:
            with self._lock:
                slot = executors.choose_slot(self._slots, job.checkpoint)
                if slot is None:
                    return None
                slot.job_id = job.id
            if self._answers(slot):
                return slot
            with self._lock:  # died while idle: out of service, and the job tries another worker
                slot.alive, slot.job_id = False, None
            log.error("Ray worker %s is dead; %d workers left", slot.name, sum(s.alive for s in self.slots()))

    @staticmethod
    def _answers(slot: Slot) -> bool:
        """False when `slot`'s worker is dead (one round trip, well under a millisecond locally); a
        worker that is merely slow to answer counts as alive."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError
        try:
            ray.get(slot.handle.ping.remote(), timeout=PING_TIMEOUT_S)
        except RayActorError:
            return False
        except GetTimeoutError:
            log.warning("Ray worker %s did not answer within %.0f s", slot.name, PING_TIMEOUT_S)
        return True

    def release(self, slot: Slot) -> None:
        with self._lock:
            slot.job_id = None
            self._mirrors.pop(slot.name, None)
            self._previews.pop(slot.name, None)

    # --- running ---------------------------------------------------------------------------------
    def run(self, slot: Slot, job: JobRecord, emit: Emit) -> jobs.JobOutput:
        """Run `job` on `slot`'s worker, blocking; progress goes to `emit` and to a run context of
        this thread (the progress routes find it by task id).

        Raises:
            WorkerLost: the worker died before the job finished (its slot is out of service).
            Exception: what the job raised in the worker (a SerenaError keeps its type).
        """
        from ray.exceptions import RayActorError
        from modules import shared
        mirror = context.RunContext(job.id, job=f"scripts_{job.kind}")
        mirror.cancel = _ForwardedCancel(lambda kind: self._send_cancel(slot, job.id, kind))
        unsubscribe = executors.follow(mirror, emit)
        with self._lock:
            self._mirrors[slot.name] = mirror
        options = {k: v for k, v in shared.opts.data.items() if k not in NOT_SENT_OPTIONS}
        try:
            with context.activate(mirror):
                stream = slot.handle.run.remote(job.id, job.kind, job.request, job.source == "ui", job.checkpoint,
                                                options)
                output = self._follow_stream(slot, stream, mirror)
        except RayActorError as e:
            with self._lock:
                slot.alive = False
            log.error("Ray worker %s died while running job %s; %d workers left", slot.name, job.id,
                      sum(s.alive for s in self.slots()))
            raise WorkerLost(f"worker {slot.name} died while running job {job.id}: {_first_line(e)}") from e
        finally:
            unsubscribe()
        slot.checkpoint = output.checkpoint
        return output

    def _follow_stream(self, slot: Slot, stream: Any, mirror: context.RunContext) -> jobs.JobOutput:
        import ray
        began = time.perf_counter()
        for ref in stream:
            event, data = ray.get(ref)
            if event == "progress":
                for item in data:
                    _mirror_progress(mirror, item)
            elif event == "preview":
                self._show_preview(slot, mirror, *data)
            elif event == "output":
                output, execute_s = data
                self.job_times.append(JobTiming(mirror.task_id or "", slot.name, time.perf_counter() - began,
                                                execute_s))
                return output
            elif event == "error":
                raise data
        raise WorkerLost(f"worker {slot.name} ended job {mirror.task_id} without a result")

    def _show_preview(self, slot: Slot, mirror: context.RunContext, preview_id: int, png: bytes) -> None:
        from PIL import Image
        with self._lock:
            self._previews[slot.name] = (preview_id, png)
        mirror.progress.current_image = Image.open(io.BytesIO(png))
        mirror.progress.id_live_preview = preview_id
        mirror.progress.current_image_sampling_step = mirror.progress.sampling_step

    def cancel(self, slot: Slot, kind: str = "interrupt") -> None:
        with self._lock:
            mirror = self._mirrors.get(slot.name)
            job_id = slot.job_id
        if mirror is not None:
            getattr(mirror.cancel, kind)()  # recorded on the server, forwarded to the worker
        elif job_id is not None:
            self._send_cancel(slot, job_id, kind)

    def _send_cancel(self, slot: Slot, job_id: str, kind: str) -> None:
        if slot.alive:
            slot.handle.cancel.remote(job_id, kind)

    def preview(self, slot: Slot) -> tuple[int, bytes | None]:
        with self._lock:
            return self._previews.get(slot.name, (0, None))


def _mirror_progress(mirror: context.RunContext, data: dict[str, Any]) -> None:
    """Copy a worker's progress event into the server-side context and announce it there."""
    progress = mirror.progress
    progress.job_no = int(data.get("job_no") or 0)
    progress.job_count = int(data.get("job_count") or 0)
    progress.sampling_step = int(data.get("step") or 0)
    progress.sampling_steps = int(data.get("steps") or 0)
    if data.get("textinfo") is not None:
        progress.textinfo = progress.job = data["textinfo"]
    progress.emit(data.get("kind") or "step")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _python_path() -> str:
    existing = os.environ.get("PYTHONPATH")
    return ROOT if not existing else os.pathsep.join([ROOT, existing])


def _local_threads(workers: int) -> int:
    import torch
    return max(1, torch.get_num_threads() // max(1, workers))


def _wants_cpu(flags: argparse.Namespace | list[str]) -> bool:
    use_cpu = getattr(flags, "use_cpu", None) if isinstance(flags, argparse.Namespace) else (
        flags[flags.index("--use-cpu") + 1:flags.index("--use-cpu") + 2] if "--use-cpu" in flags else [])
    return "all" in (use_cpu or [])


def _local_gpus(flags: argparse.Namespace | list[str]) -> int:
    if _wants_cpu(flags):
        return 0
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _worker_gpus(flags: argparse.Namespace | list[str], workers: int, local: bool) -> float:
    if _wants_cpu(flags):
        return 0
    if not local:
        return 1
    gpus = _local_gpus(flags)
    return min(1.0, gpus / workers) if gpus else 0
