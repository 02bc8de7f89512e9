"""`ftlaunch bench`: one spec across techniques (and optionally clouds and GPUs), each cell a normal job.

The runner keeps its state in <out>/bench.json, so a bench can be resumed: a cell that succeeded with
the same effective spec (its digest) is not rerun, a cell whose spec changed runs again (`--force` reruns
all), a failed cell is reported with its reason and the others still finish. Each cell records the
machine's load average while it ran, so timings taken on a busy machine are flagged in the report. Every number in the
report comes from the cells' fetched summary.json and metrics.jsonl (plus the planner's predictions).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from ftlaunch.core import errors, manifest
from ftlaunch.core import spec as spec_mod
from ftlaunch.core.techniques import Task, Technique, supported_techniques, trainable_percent, unsupported_reason

STATE_FILE = "bench.json"
POLL_S = 1.0


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the bench: a technique on a target (and GPU type)."""

    technique: Technique
    cloud: str = "local"
    gpu: str | None = None

    @property
    def key(self) -> str:
        return "-".join(p for p in (self.technique.value, self.cloud if self.cloud != "local" else "", self.gpu or "") if p)


def cells_for(spec: spec_mod.Spec, techniques: list[str] | None = None, clouds: list[str] | None = None,
              gpus: list[str] | None = None) -> list[Cell]:
    """The bench's cells, in order; rejects techniques the task does not support, with the reason."""
    chosen = [Technique(t) for t in techniques] if techniques else \
        (list(spec.bench.techniques) if spec.bench.techniques else supported_techniques(spec.task))
    problems = [errors.Problem(reason, field=f"technique {t.value}")
                for t in chosen if (reason := unsupported_reason(t, spec.task))]
    if problems:
        raise errors.UserError(f"these techniques cannot run task '{spec.task.value}'.", problems=problems,
                               hint=f"use --techniques with: {', '.join(t.value for t in supported_techniques(spec.task))}")
    clouds = clouds or [spec.resources.cloud]
    gpus = gpus or [spec.resources.gpu]
    return [Cell(t, c, g) for t in chosen for c in clouds for g in gpus]


def cell_spec(base: spec_mod.Spec, cell: Cell) -> spec_mod.Spec:
    """The spec of one cell: the base spec with the cell's technique, its settings and learning rate."""
    data = base.model_dump(mode="json")
    data["name"] = f"{base.name}-{cell.technique.value}"[:40].rstrip("-")
    data["technique"] = cell.technique.value
    same = cell.technique is base.technique
    data["technique_args"] = base.bench.technique_args.get(cell.technique, base.technique_args if same else {})
    lr = base.bench.learning_rates.get(cell.technique)
    if lr is not None or not same:
        data["hyperparameters"]["learning_rate"] = lr  # None: the technique's own default
    data["resources"]["cloud"] = cell.cloud
    data["resources"]["gpu"] = cell.gpu
    data["bench"] = {}
    return spec_mod.validate(data, source=f"bench cell {cell.key}")


class Runner:
    """Runs a bench's cells and keeps <out>/bench.json current after every change."""

    def __init__(self, base: spec_mod.Spec, cells: list[Cell], out: Path,
                 on_event: Callable[[str], None] = lambda message: None, force: bool = False):
        self.base, self.cells, self.out = base, cells, Path(out)
        self.on_event, self.force = on_event, force
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = self._load_state()

    # ------------------------------------------------------------------ state
    def _load_state(self) -> dict[str, Any]:
        path = self.out / STATE_FILE
        if not path.exists():
            return {"spec": self.base.to_json(), "cells": {}}
        state = json.loads(path.read_text())
        if state.get("spec", {}).get("name") != self.base.name:
            raise errors.UserError(f"{self.out} holds a bench of another spec ({state.get('spec', {}).get('name')}).",
                                   hint="pass --out with a new folder, or remove the old one")
        return state

    def _save(self) -> None:
        manifest.atomic_write_text(self.out / STATE_FILE, json.dumps(self.state, indent=2, default=str))

    def cell_state(self, cell: Cell) -> dict[str, Any]:
        return self.state["cells"].setdefault(cell.key, {"technique": cell.technique.value, "cloud": cell.cloud,
                                                          "gpu": cell.gpu, "state": "NEW"})

    def cell_dir(self, cell: Cell) -> Path:
        return self.out / "cells" / cell.key

    # ------------------------------------------------------------------ running
    def run(self) -> dict[str, Any]:
        """Runs every unfinished cell: local cells one after another, cloud cells submitted together."""
        todo = []
        for cell in self.cells:
            why = self._rerun_reason(cell)
            if why is None:
                self.on_event(f"{cell.key}: finished earlier with the same spec, not rerun (--force reruns it)")
                continue
            if why:
                self.on_event(f"{cell.key}: {why}, so it runs again")
                self.cell_state(cell).update(state="NEW", job=None)
            todo.append(cell)
        local = [c for c in todo if c.cloud == "local"]
        remote = [c for c in todo if c.cloud != "local"]
        for cell in remote:
            self._submit(cell)
        for cell in local:
            if self._submit(cell):
                self._wait(cell)
        for cell in remote:
            if self.cell_state(cell)["state"] == "RUNNING":
                self._wait(cell)
        return self.state

    def _finished(self, cell: Cell) -> bool:
        return self._rerun_reason(cell) is None

    def _rerun_reason(self, cell: Cell) -> str | None:
        """None when the cell's finished outputs stand; "" when it simply has not finished; else why a
        finished cell runs again (--force, its effective spec changed, its outputs do not verify)."""
        st = self.cell_state(cell)
        if st["state"] != "SUCCEEDED":
            return ""
        if self.force:
            return "--force"
        digest = cell_digest(self.base, cell)
        if st.get("digest") != digest:
            return (f"its spec changed since it ran (digest {st.get('digest') or 'not recorded'} -> {digest})")
        try:
            manifest.verify(self.cell_dir(cell))
        except errors.UserError:
            return "its outputs no longer verify against manifest.json"
        return None

    def _submit(self, cell: Cell) -> bool:
        """Plans, renders and submits one cell; a failure to plan is recorded as the cell's reason."""
        from ftlaunch import backends
        from ftlaunch.planning import image as plan_image
        from ftlaunch.core import jobs
        from ftlaunch.planning import plan as plan_mod

        st = self.cell_state(cell)
        if st["state"] == "RUNNING" and st.get("job"):
            self.on_event(f"{cell.key}: resuming {st['job']}")
            return True
        try:
            spec = cell_spec(self.base, cell)
            plan = plan_mod.make(spec)
            plan_image.choose_image(plan)
            backend = backends.get(plan.cloud)
            request = backend.render(plan)
            plan_image.ensure_image(plan, request)  # a cloud cell: its image in the registry first, if missing
            handle = backend.submit(request)
        except errors.UserError as exc:
            st.update(state="FAILED", reason=exc.render(), job=None)
            self._save()
            self.on_event(f"{cell.key}: could not start: {exc.message}")
            return False
        store = jobs.JobStore()
        try:
            cost = plan.offer.cost[1] if plan.offer and plan.offer.cost else None
            store.add(handle=handle, spec=spec, image=plan.image, state="PENDING", predicted_cost=cost,
                      plan_json={k: v for k, v in plan.to_json().items() if k != "spec"})
        finally:
            store.close()
        st.update(state="RUNNING", job=handle.job_name, reason=None, started_at=time.time(), digest=spec.digest(),
                  predicted=self._prediction(spec, plan), cpus=os.cpu_count(), load_average_max=_load_average())
        self._save()
        self.on_event(f"{cell.key}: submitted {handle.job_name}")
        return True

    def _prediction(self, spec: spec_mod.Spec, plan: Any) -> dict[str, Any]:
        """What the planner predicted for this cell: memory here, and cost on the cheapest cloud offer that fits."""
        from ftlaunch.planning import plan as plan_mod

        out: dict[str, Any] = {}
        if plan.estimate and plan.estimate.get("memory"):
            out["peak_gb"] = plan.estimate["memory"].get("peak_gb")
        if plan.offer and plan.offer.cost and plan.cloud != "local":
            out.update(cost_usd=list(plan.offer.cost), offer=f"{plan.offer.cloud} {plan.offer.instance}",
                       hours=list(plan.offer.hours) if plan.offer.hours else None)
            return out
        try:
            cloud = plan_mod.make(spec, name=plan.job_name, targets=plan_mod.TARGETS, require_fit=False)
        except errors.UserError:
            return out
        if cloud.offer is not None and cloud.offer.cost:
            out.update(cost_usd=list(cloud.offer.cost), hours=list(cloud.offer.hours) if cloud.offer.hours else None,
                       offer=f"{cloud.offer.cloud} {cloud.offer.instance} ({cloud.offer.gpus} x {cloud.offer.gpu})",
                       cloud_peak_gb=cloud.offer.peak_gb_per_gpu)
        return out

    def _wait(self, cell: Cell) -> None:
        from ftlaunch import backends
        from ftlaunch.core import jobs

        st = self.cell_state(cell)
        store = jobs.JobStore()
        try:
            record = store.get(st["job"])
        finally:
            store.close()
        backend = backends.get(record.backend)
        handle = record.handle
        while True:
            status = backend.status(handle)
            st["load_average_max"] = max(st.get("load_average_max") or 0.0, _load_average() or 0.0)
            if status.state.done:
                break
            time.sleep(POLL_S)
        store = jobs.JobStore()
        try:
            store.update(record.id, state=status.state.value, reason=status.reason)
        finally:
            store.close()
        st["ended_at"] = time.time()
        if status.state.value != "SUCCEEDED":
            st.update(state=status.state.value, reason=status.reason)
            self._save()
            self.on_event(f"{cell.key}: {status.state.value}: {status.reason}")
            return
        try:
            backend.fetch(handle, self.cell_dir(cell))
        except errors.UserError as exc:
            st.update(state="FAILED", reason=f"outputs did not verify: {exc.render()}")
            self._save()
            self.on_event(f"{cell.key}: outputs did not verify")
            return
        st.update(state="SUCCEEDED", reason=None, actual_cost_usd=record.actual_cost if record.backend != "local" else 0.0)
        self._save()
        self.on_event(f"{cell.key}: SUCCEEDED")


def cell_digest(base: spec_mod.Spec, cell: Cell) -> str:
    """The digest of a cell's effective spec: a finished cell is reused only while this is unchanged."""
    return cell_spec(base, cell).digest()


def _load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def run(spec_path: str, *, techniques: list[str] | None = None, clouds: list[str] | None = None,
        gpus: list[str] | None = None, overrides: tuple[str, ...] = (), out: str | None = None,
        on_event: Callable[[str], None] = lambda message: None,
        force: bool = False) -> tuple[Runner, list[dict[str, Any]]]:
    """Runs (or resumes) a bench and returns the runner and the report rows."""
    base = spec_mod.load(spec_path, overrides)
    cells = cells_for(base, techniques, clouds, gpus)
    runner = Runner(base, cells, Path(out or f"bench-{base.name}"), on_event=on_event, force=force)
    runner.run()
    return runner, gather(runner)


# ---------------------------------------------------------------------- the numbers

# task -> (summary key, higher is better, label)
QUALITY: dict[Task, tuple[str, bool, str]] = {
    Task.SFT: ("eval_loss", False, "eval loss"),
    Task.CPT: ("eval_loss", False, "eval loss"),
    Task.CLASSIFICATION: ("accuracy", True, "accuracy"),
    Task.REWARD: ("reward_accuracy", True, "reward accuracy"),
    Task.DPO: ("reward_accuracy", True, "reward accuracy"),
    Task.RL: ("mean_reward", True, "mean reward"),
}


def gather(runner: Runner) -> list[dict[str, Any]]:
    """One row per cell, every number read from that cell's fetched outputs or recorded prediction."""
    key, _, _ = QUALITY[runner.base.task]
    rows = []
    for cell in runner.cells:
        st = runner.cell_state(cell)
        row: dict[str, Any] = {"cell": cell.key, "technique": cell.technique.value, "cloud": cell.cloud,
                               "gpu": cell.gpu, "state": st["state"], "reason": st.get("reason"), "job": st.get("job")}
        predicted = st.get("predicted") or {}
        row["predicted_peak_gb"] = predicted.get("peak_gb")
        row["predicted_cost_usd"] = predicted.get("cost_usd")
        row["predicted_offer"] = predicted.get("offer")
        row["actual_cost_usd"] = st.get("actual_cost_usd")
        folder = runner.cell_dir(cell)
        summary_path = folder / "summary.json"
        if st["state"] == "SUCCEEDED" and summary_path.exists():
            s = json.loads(summary_path.read_text())
            row["summary"] = s
            row["quality"] = s.get(key)
            row["trainable_params"] = s.get("trainable_params")
            row["total_params"] = s.get("total_params")
            row["peak_memory_gb"] = s["peak_memory_bytes"] / 1e9 if s.get("peak_memory_bytes") else None
            row["train_runtime_s"] = s.get("train_runtime_s")
            row["wall_time_s"] = s.get("wall_time_s")
            tokens, runtime = s.get("tokens_seen"), s.get("train_runtime_s")
            row["tokens_per_s"] = tokens / runtime if tokens and runtime else None
            row["weights_bytes"] = sum(p.stat().st_size for p in (folder / "weights").rglob("*")
                                       if p.is_file() and p.suffix == ".safetensors")
            row["losses"] = [(r["step"], r["loss"]) for r in _metrics(folder / "metrics.jsonl") if "loss" in r]
        row["load_average_max"], row["cpus"] = st.get("load_average_max"), st.get("cpus")
        rows.append(row)
    _trainable_percent(rows)
    return rows


def _trainable_percent(rows: list[dict[str, Any]]) -> None:
    """Sets each row's trainable % by the one definition (techniques.trainable_percent): trainable over
    all parameters of the trained model, unquantised. Results stored before the trainer counted 4-bit
    weights unpacked hold a QLoRA total about half too small; the frozen base is the same in every PEFT
    cell of a bench, so the largest frozen count stands for it."""
    frozen = max(((r.get("total_params") or 0) - (r.get("trainable_params") or 0) for r in rows), default=0)
    for r in rows:
        trainable, total = r.get("trainable_params"), r.get("total_params")
        if trainable is None or not total:
            r["trainable_percent"] = None
            continue
        if trainable < total:
            total = max(total, frozen + trainable)
        r["trainable_percent"] = trainable_percent(trainable, total)


def _metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pareto(rows: list[dict[str, Any]], higher_is_better: bool, cost_key: str) -> list[str]:
    """Cells no other cell beats on both quality and cost (cost_key: a number per row, lower is better)."""
    done = [r for r in rows if r.get("quality") is not None and r.get(cost_key) is not None]
    front = []
    for r in done:
        q, c = r["quality"], r[cost_key]
        dominated = any(
            (o["quality"] >= q if higher_is_better else o["quality"] <= q) and o[cost_key] <= c
            and (o["quality"] != q or o[cost_key] != c)
            for o in done if o is not r)
        if not dominated:
            front.append(r["cell"])
    return front
