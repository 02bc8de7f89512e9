"""Dated hourly prices per target (SageMaker, Vertex AI, Azure ML, SkyPilot), each row with its source, and their refresh.

The shipped table (`data/prices.csv`) is built by `build_default()` from SkyPilot catalog extracts
(`data/skypilot/`) plus directly quoted managed-service prices (`data/quotes.csv`); managed prices that
no source quotes are derived from the VM price with a stated factor, and the row's source says so.
`refresh()` writes a newer table to $FTLAUNCH_HOME/prices.csv from the providers' public price APIs
or from SkyPilot catalog files found on this machine; `load()` prefers that file when it exists.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import json
import os
import re
import statistics
from pathlib import Path
from typing import Any, Callable, Iterable

from ftlaunch import backends
from ftlaunch.core import errors
from ftlaunch.core import gpus as gpu_catalog

DATA = Path(__file__).parent / "data"
DEFAULT_TABLE = DATA / "prices.csv"
TARGETS = backends.CLOUDS  # the registry's cloud targets: each has rows here
COLUMNS = ("target", "instance", "gpu", "gpus", "region", "usd_per_hour", "spot_usd_per_hour", "date", "source",
           "details")
EXTRACT_DATE = "2026-11-27"
EXTRACT_SOURCE = {
    "aws": "SkyPilot catalog v8 aws/vms.csv @00148f2 (read 2026-11-27; EC2 list price after the June-2025 P4/P5 cut)",
    "gcp": "SkyPilot catalog v8 gcp/vms.csv @006059e (read 2026-11-27; host VM row + GPU row)",
    "azure": "SkyPilot catalog v6 azure/vms.csv @098741e (read 2026-11-27)",
}

# --- managed-service rules (each with the evidence behind it) -------------------------------------------
SAGEMAKER_FACTORS = (  # (instance pattern, factor, evidence)
    (r"^(g4dn|g5|g6|g6e)\.xlarge$", 1.40, "SageMaker/EC2 = 1.40 for xlarge g-sizes (ml.g4dn.xlarge 0.736/0.526, "
     "ml.g5.xlarge 1.408/1.006, ml.g6.xlarge 1.127/0.8048)"),
    (r"^(g4dn|g5|g6|g6e)\.", 1.25, "SageMaker/EC2 = 1.25 for other g4dn/g5/g6 sizes (fmbench pricing.yml)"),
    (r"^(p3dn|p4d|p4de|p5|p5en|p6-b200)\.", 1.15, "SageMaker/EC2 = 1.15 for p4d/p5 (fmbench pricing.yml, pre-June-2025 "
     "prices; whether SageMaker followed the EC2 cut is not in a stored source)"),
)
SAGEMAKER_SKIP = {"p5.4xlarge": "no ml.p5.4xlarge training price in a stored source",
                  "p5e.48xlarge": "no on-demand price (capacity blocks only)"}
VERTEX_A2_FACTOR = (1.20, "Vertex/GCE = 1.20 for A2 (8xA100 custom training $35.26/h in us-central1, cubeapm.com "
                          "'Vertex AI Cost Monitoring', vs GCE a2-highgpu-8g $29.38708)")
VERTEX_MACHINE_FACTOR = (1.15, "Vertex machine = GCE machine x 1.15 (Vertex n1-standard-4 $0.21849885 vs GCE "
                               "$0.189999, the GCE figure recalled) and no surcharge on the accelerator (Vertex "
                               "H100 $9.79655057/GPU-h = GCE us-east4)")
VERTEX_ACCELERATOR = {"T4": "NVIDIA_TESLA_T4", "L4": "NVIDIA_L4", "V100": "NVIDIA_TESLA_V100",
                      "A100": "NVIDIA_TESLA_A100", "A100-80GB": "NVIDIA_A100_80GB", "H100": "NVIDIA_H100_80GB",
                      "H100-MEGA": "NVIDIA_H100_MEGA_80GB", "H200": "NVIDIA_H200_141GB", "B200": "NVIDIA_B200"}
GCP_MACHINE_GPU = {"a2-highgpu": "A100", "a2-megagpu": "A100", "a2-ultragpu": "A100-80GB", "a3-highgpu": "H100",
                   "a3-megagpu": "H100-MEGA", "a3-ultragpu": "H200", "a4-highgpu": "B200"}
GCP_ANOMALOUS = {("us-central1", "H100"), ("us-central1", "H200"), ("us-central1", "A100-80GB"),
                 ("us-central1", "B200"), ("us-central1", "H100-MEGA")}
STALE_DAYS = 365  # a price row older than this is marked stale in the plan and warned about when chosen
DOUBTFUL_MARK = "caution:"  # in a row's source: the builder flagged the price (see GCP_ANOMALY_NOTE)
GCP_ANOMALY_NOTE = ("; caution: this region's per-GPU price differs ~2x from other regions in the catalog "
                    "(possibly a DWS/flex-start SKU) - check with `ftlaunch prices refresh`")
AZURE_FIXES = {  # armSkuName -> (gpu, count, why)
    "Standard_ND96isr_H100_v5": ("H100", 8, "catalog lists 12 GPUs; the VM has 8x H100 SXM"),
    "Standard_NC40ads_H100_v5": ("H100-NVL", 1, "NC H100 v5 VMs carry H100 NVL (94 GB)"),
    "Standard_NC80adis_H100_v5": ("H100-NVL", 2, "NC H100 v5 VMs carry H100 NVL (94 GB)"),
    "Standard_NC32ads_A10_v4": ("A10", 1, "catalog leaves the accelerator empty; NC32ads A10 v4 has one full A10"),
}
AZURE_FRACTIONAL = {"Standard_NC8ads_A10_v4", "Standard_NC16ads_A10_v4"}  # 1/3 and 1/2 of an A10: not offered
SKYPILOT_REGIONS = {"aws": ("us-east-1", "us-east-2", "us-west-2", "eu-west-1"),
                    "gcp": ("us-central1", "us-east4", "europe-west4"),
                    "azure": ("eastus", "westus3", "westeurope")}


@dataclasses.dataclass(frozen=True)
class PriceRow:
    """One purchasable configuration on one target: USD per hour for the whole instance (all its GPUs)."""

    target: str
    instance: str  # the provider's own name: ml.p4d.24xlarge, a2-highgpu-1g, Standard_NC24ads_A100_v4, aws:p4d.24xlarge
    gpu: str  # catalog GPU name (gpus.GPU.name, or H100-MEGA)
    gpus: int
    region: str
    usd_per_hour: float | None
    spot_usd_per_hour: float | None
    date: str
    source: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.target, self.instance, self.region)

    @property
    def doubtful(self) -> bool:
        """A price the table itself flags as unlikely (GCP's ~2x regional anomalies): never chosen, shown marked."""
        return DOUBTFUL_MARK in self.source or bool(self.details.get("doubtful"))

    @property
    def derived(self) -> bool:
        """A managed-service price computed from a VM price and a factor, not quoted by the provider."""
        return self.source.startswith("derived")

    def stale(self, today: _dt.date | None = None) -> bool:
        """Older than STALE_DAYS, or undated ('before 2025-06')."""
        try:
            when = _dt.date.fromisoformat(self.date)
        except ValueError:
            return True
        return ((today or _dt.date.today()) - when).days > STALE_DAYS

    def flags(self, today: _dt.date | None = None) -> list[str]:
        """'doubtful', 'derived', 'stale': what the planner marks on an offer priced from this row."""
        return [name for name, on in (("doubtful", self.doubtful), ("derived", self.derived),
                                      ("stale", self.stale(today))) if on]

    def to_csv(self) -> dict[str, str]:
        return {"target": self.target, "instance": self.instance, "gpu": self.gpu, "gpus": str(self.gpus),
                "region": self.region, "usd_per_hour": _fmt(self.usd_per_hour),
                "spot_usd_per_hour": _fmt(self.spot_usd_per_hour), "date": self.date, "source": self.source,
                "details": json.dumps(self.details, sort_keys=True)}


# --------------------------------------------------------------------------- reading

def user_table() -> Path:
    """Where `ftlaunch prices refresh` writes: $FTLAUNCH_HOME/prices.csv."""
    return Path(os.environ.get("FTLAUNCH_HOME") or Path.home() / ".ftlaunch").expanduser() / "prices.csv"


_CACHE: dict[tuple[str, float], list[PriceRow]] = {}


def load(path: str | Path | None = None) -> list[PriceRow]:
    """The price table: `path`, else the refreshed user table if present, else the shipped default."""
    if path is None:
        path = user_table() if user_table().exists() else DEFAULT_TABLE
    path = Path(path)
    try:
        stamp = path.stat().st_mtime
    except OSError:
        raise errors.UserError(f"price table {path} does not exist.", hint="run `ftlaunch prices refresh`") from None
    cached = _CACHE.get((str(path), stamp))
    if cached is None:
        cached = _CACHE[(str(path), stamp)] = read_csv(path.read_text(encoding="utf-8"))
    return list(cached)


def read_csv(text: str) -> list[PriceRow]:
    rows = []
    for rec in csv.DictReader(io.StringIO(text)):
        rows.append(PriceRow(target=rec["target"], instance=rec["instance"], gpu=rec["gpu"], gpus=int(rec["gpus"]),
                             region=rec["region"], usd_per_hour=_num(rec["usd_per_hour"]),
                             spot_usd_per_hour=_num(rec["spot_usd_per_hour"]), date=rec["date"],
                             source=rec["source"], details=json.loads(rec.get("details") or "{}")))
    return rows


def write_csv(rows: Iterable[PriceRow], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (r.target, r.gpu, r.gpus, r.instance, r.region)):
        writer.writerow(row.to_csv())
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def table(rows: Iterable[PriceRow], target: str | None = None, gpu: str | None = None) -> list[dict[str, Any]]:
    """Rows for `ftlaunch prices show` (computing apart from printing)."""
    out = []
    for r in rows:
        if target and r.target != target:
            continue
        if gpu and not (gpu_catalog.same(gpu, r.gpu) or gpu.lower() == r.gpu.lower()):
            continue
        out.append({"target": r.target, "instance": r.instance, "gpu": r.gpu, "gpus": r.gpus, "region": r.region,
                    "usd_per_hour": r.usd_per_hour, "spot_usd_per_hour": r.spot_usd_per_hour, "date": r.date,
                    "source": r.source, "flags": r.flags()})
    return out


# --------------------------------------------------------------------------- building from SkyPilot catalogs

def build_default() -> list[PriceRow]:
    """The shipped table, rebuilt from the shipped extracts and quotes (what data/prices.csv holds)."""
    sky = DATA / "skypilot"
    return build(read_skypilot_csv((sky / "aws_vms.csv").read_text(), "aws", EXTRACT_DATE, EXTRACT_SOURCE["aws"]),
                 read_skypilot_csv((sky / "gcp_vms.csv").read_text(), "gcp", EXTRACT_DATE, EXTRACT_SOURCE["gcp"]),
                 read_skypilot_csv((sky / "azure_vms.csv").read_text(), "azure", EXTRACT_DATE,
                                   EXTRACT_SOURCE["azure"]),
                 read_quotes((DATA / "quotes.csv").read_text()))


@dataclasses.dataclass
class VMPrice:
    """One cloud VM (or GCP host or GPU part) in one region, folded over availability zones."""

    cloud: str
    instance: str  # empty for a GCP GPU row
    gpu: str
    gpus: int
    region: str
    price: float | None
    spot: float | None
    spot_range: tuple[float, float] | None
    date: str
    source: str


def read_skypilot_csv(text: str, cloud: str, date: str, source: str,
                      regions: Iterable[str] | None = None) -> list[VMPrice]:
    """Parses a SkyPilot vms.csv (any schema version; columns by header name) into one VMPrice per instance and
    region. Spot is the median over zones, leaving out local zones and zones whose spot is not below on-demand."""
    regions = set(regions or SKYPILOT_REGIONS[cloud]) | {"us-east-1", "us-east-2", "us-west-2"} \
        if cloud == "aws" else set(regions or SKYPILOT_REGIONS[cloud])
    groups: dict[tuple, list[dict[str, str]]] = {}
    for rec in csv.DictReader(io.StringIO(text)):
        if rec.get("Region") not in regions:
            continue
        gpu = (rec.get("AcceleratorName") or "").strip()
        count = _num(rec.get("AcceleratorCount") or "")
        key = (rec.get("InstanceType") or "", gpu, int(count or 0), rec["Region"])
        groups.setdefault(key, []).append(rec)
    out = []
    for (instance, gpu, count, region), recs in groups.items():
        prices = [p for p in (_num(r.get("Price", "")) for r in recs) if p is not None]
        price = prices[0] if prices else None
        spots = []
        for r in recs:
            spot = _num(r.get("SpotPrice", ""))
            zone = r.get("AvailabilityZone") or ""
            if spot is None or (price is not None and spot >= price) or zone.count("-") > 1 and cloud == "aws":
                continue
            spots.append(spot)
        if not spots and price is None:  # e.g. p5e: only local-zone or no-discount spot values and no on-demand
            spots = [s for s in (_num(r.get("SpotPrice", "")) for r in recs) if s is not None]
        spot = round(statistics.median(spots), 6) if spots else None
        out.append(VMPrice(cloud, instance, gpu, count, region, price, spot,
                           (min(spots), max(spots)) if spots else None, date, source))
    return out


def read_quotes(text: str) -> list[dict[str, Any]]:
    return [dict(rec, gpus=int(rec["gpus"]), usd_per_hour=float(rec["usd_per_hour"]))
            for rec in csv.DictReader(io.StringIO(text))]


def build(aws: list[VMPrice], gcp: list[VMPrice], azure: list[VMPrice], quotes: list[dict[str, Any]]) -> list[PriceRow]:
    """All four targets' rows from parsed VM prices plus quoted managed prices."""
    rows: list[PriceRow] = []
    rows += _skypilot_aws(aws)
    rows += _sagemaker(aws, quotes)
    gcp_pairs = _gcp_pairs(gcp)
    rows += _skypilot_gcp(gcp_pairs)
    rows += _vertex(gcp_pairs, gcp, quotes)
    azure_vms = _azure_vms(azure)
    rows += [dataclasses.replace(r, target="skypilot", instance=f"azure:{r.instance}",
                                 details=dict(r.details, cloud="azure", instance_type=r.instance)) for r in azure_vms]
    rows += [dataclasses.replace(r, source=r.source + "; Azure ML compute clusters bill at VM rates (infracost PR "
                                 "#2902), low-priority = spot") for r in azure_vms]
    return rows


def _known_gpu(name: str) -> bool:
    return gpu_catalog.find(name) is not None


def _skypilot_aws(aws: list[VMPrice]) -> list[PriceRow]:
    rows = []
    for vm in aws:
        if not vm.instance or not _known_gpu(vm.gpu) or vm.price is None:
            continue
        rows.append(PriceRow("skypilot", f"aws:{vm.instance}", vm.gpu, vm.gpus, vm.region, vm.price, vm.spot, vm.date,
                             vm.source, {"cloud": "aws", "instance_type": vm.instance,
                                         "spot_range": list(vm.spot_range) if vm.spot_range else None}))
    return rows


def _sagemaker(aws: list[VMPrice], quotes: list[dict[str, Any]]) -> list[PriceRow]:
    quoted = {q["instance"]: q for q in quotes if q["target"] == "sagemaker"}
    ec2 = {vm.instance: vm for vm in aws if vm.region == "us-east-1" and vm.instance}
    rows = []
    for instance in sorted(set(ec2) | {q[3:] for q in quoted}):
        vm = ec2.get(instance)
        q = quoted.get("ml." + instance)
        if instance in SAGEMAKER_SKIP or (vm is not None and not _known_gpu(vm.gpu)):
            continue
        spot_ratio = vm.spot / vm.price if vm is not None and vm.spot and vm.price else None
        spot_note = (f"; managed spot = SageMaker on-demand x EC2 spot/on-demand ({spot_ratio:.3f}), derived"
                     if spot_ratio else "")
        details = {"instance_type": "ml." + instance, "ec2_usd_per_hour": vm.price if vm else None}
        if q is not None:
            price = q["usd_per_hour"]
            rows.append(PriceRow("sagemaker", "ml." + instance, q["gpu"], q["gpus"], q["region"], price,
                                 _r(price * spot_ratio) if spot_ratio else None, q["date"], q["source"] + spot_note,
                                 details))
            continue
        if vm is None or vm.price is None:
            continue
        rule = next(((f, why) for pattern, f, why in SAGEMAKER_FACTORS if re.match(pattern, instance)), None)
        if rule is None:
            continue
        factor, why = rule
        price = _r(vm.price * factor)
        rows.append(PriceRow("sagemaker", "ml." + instance, vm.gpu, vm.gpus, vm.region, price,
                             _r(price * spot_ratio) if spot_ratio else None, vm.date,
                             f"derived: EC2 {instance} ${vm.price}/h ({vm.source}) x {factor}: {why}{spot_note}",
                             details))
    return rows


def _gcp_pairs(gcp: list[VMPrice]) -> list[tuple[VMPrice, VMPrice]]:
    """(host VM, GPU part) pairs that make one GCP machine type in one region."""
    hosts = [vm for vm in gcp if vm.instance]
    parts = {(vm.gpu, vm.gpus, vm.region): vm for vm in gcp if not vm.instance and vm.gpu}
    pairs = []
    for host in hosts:
        m = re.match(r"^([a-z0-9]+-[a-z]+gpu)-(\d+)g$", host.instance)
        if not m or m.group(1) not in GCP_MACHINE_GPU:
            continue
        gpu, count = GCP_MACHINE_GPU[m.group(1)], int(m.group(2))
        part = parts.get((gpu, count, host.region))
        if part is not None and host.price is not None and part.price is not None:
            pairs.append((host, part))
    return pairs


def _spec_name(gpu: str) -> str:
    return "H100" if gpu == "H100-MEGA" else gpu


def _skypilot_gcp(pairs: list[tuple[VMPrice, VMPrice]]) -> list[PriceRow]:
    rows = []
    for host, part in pairs:
        flag = GCP_ANOMALY_NOTE if (host.region, part.gpu) in GCP_ANOMALOUS else ""
        spot = _r(host.spot + part.spot) if host.spot is not None and part.spot is not None else None
        if spot is not None and spot >= host.price + part.price:
            spot = None
        rows.append(PriceRow("skypilot", f"gcp:{host.instance}", _spec_name(part.gpu), part.gpus, host.region,
                             _r(host.price + part.price), spot, host.date,
                             f"{host.source}: host ${host.price}/h + {part.gpus}x {part.gpu} ${part.price}/h{flag}",
                             {"cloud": "gcp", "instance_type": host.instance, "accelerator": part.gpu,
                              "accelerator_count": part.gpus, "host_usd_per_hour": host.price,
                              "host_spot_usd_per_hour": host.spot, "accelerator_usd_per_hour": part.price}))
    return rows


def _vertex(pairs: list[tuple[VMPrice, VMPrice]], gcp: list[VMPrice], quotes: list[dict[str, Any]]) -> list[PriceRow]:
    quoted = {q["instance"]: q for q in quotes if q["target"] == "vertex"}
    rows = []
    for host, part in pairs:
        if host.region != "us-central1":
            continue
        accel = VERTEX_ACCELERATOR[part.gpu]
        details = {"machine_type": host.instance, "accelerator_type": accel, "accelerator_count": part.gpus}
        flag = GCP_ANOMALY_NOTE if (host.region, part.gpu) in GCP_ANOMALOUS and accel not in quoted else ""
        if host.instance.startswith("a2-"):
            factor, why = VERTEX_A2_FACTOR
            price = _r((host.price + part.price) * factor)
            spot = _r((host.spot + part.spot) * factor) if host.spot and part.spot else None
            source = f"derived: GCE host ${host.price}/h + GPUs ${part.price}/h ({host.source}) x {factor}: {why}"
        else:
            factor, why = VERTEX_MACHINE_FACTOR
            q = quoted.get(accel)
            accel_price = q["usd_per_hour"] * part.gpus if q else part.price
            accel_src = (f"{part.gpus}x ${q['usd_per_hour']}/GPU-h ({q['source']})" if q else
                         f"GPUs ${part.price}/h (GCE, {host.source})")
            price = _r(host.price * factor + accel_price)
            spot = _r(host.spot * factor + part.spot) if host.spot is not None and part.spot is not None else None
            source = f"derived: machine ${host.price}/h x {factor} + {accel_src}: {why}"
        if spot is not None and spot >= price:
            spot = None
        rows.append(PriceRow("vertex", host.instance, _spec_name(part.gpu), part.gpus,
                             host.region, price, spot, host.date, source + flag, details))
    n1 = quoted.get("n1-standard-4")
    t4 = next((vm for vm in gcp if not vm.instance and vm.gpu == "T4" and vm.gpus == 1 and vm.region == "us-central1"),
              None)
    if n1 and t4 and t4.price is not None:
        rows.append(PriceRow("vertex", "n1-standard-4", "T4", 1, "us-central1",
                             _r(n1["usd_per_hour"] + t4.price), None, n1["date"],
                             f"machine ${n1['usd_per_hour']}/h ({n1['source']}) + T4 ${t4.price}/h (GCE GPU price, "
                             f"{t4.source}; no accelerator surcharge observed on Vertex)",
                             {"machine_type": "n1-standard-4", "accelerator_type": "NVIDIA_TESLA_T4",
                              "accelerator_count": 1}))
    return rows


def _azure_vms(azure: list[VMPrice]) -> list[PriceRow]:
    rows = []
    for vm in azure:
        if vm.instance in AZURE_FRACTIONAL:
            continue
        gpu, count, note = vm.gpu, vm.gpus, ""
        if vm.instance in AZURE_FIXES:
            gpu, count, why = AZURE_FIXES[vm.instance]
            note = f"; GPU corrected: {why}"
        if not gpu or not _known_gpu(gpu) or vm.price is None:
            continue
        spot = vm.spot if vm.spot is not None and vm.spot < vm.price else None
        rows.append(PriceRow("azureml", vm.instance, gpu, count, vm.region, vm.price, spot, vm.date,
                             vm.source + note, {"vm_size": vm.instance}))
    return rows


# --------------------------------------------------------------------------- refresh

Fetch = Callable[[str], Any]  # url -> parsed JSON

AWS_SAGEMAKER_URL = "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonSageMaker/current/{region}/index.json"
AZURE_RETAIL_URL = ("https://prices.azure.com/api/retail/prices?$filter=serviceName eq 'Virtual Machines' and "
                    "armRegionName eq '{region}' and armSkuName eq '{sku}' and priceType eq 'Consumption'")
GCP_SKUS_URL = "https://cloudbilling.googleapis.com/v1/services/{service}/skus?key={key}&pageToken={token}"
GCP_COMPUTE_SERVICE = "6F81-5844-456A"  # Compute Engine
SKYPILOT_CATALOG_DIRS = ("~/.sky/catalogs/v8", "~/.sky/catalogs/v7", "~/.sky/catalogs/v6", "~/.sky/catalogs/v5")


@dataclasses.dataclass
class RefreshReport:
    """What a refresh changed, per source: rows updated, or why a source was skipped."""

    updated: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    path: str | None = None


def refresh(*, online: bool = True, fetch: Fetch | None = None, skypilot_dir: str | Path | None = None,
            gcp_api_key: str | None = None, today: str | None = None, write_to: str | Path | None = None,
            base: list[PriceRow] | None = None) -> tuple[list[PriceRow], RefreshReport]:
    """Updates the price table and writes it (default $FTLAUNCH_HOME/prices.csv).

    Sources, each optional: SkyPilot catalog CSVs under `skypilot_dir` (or ~/.sky/catalogs), then, when
    `online`, the AWS Price List bulk file for SageMaker, the Azure Retail Prices API for each Azure VM, and
    the Google Cloud Billing Catalog (needs an API key: `gcp_api_key` or $GOOGLE_API_KEY). Rows no source
    covers keep their old price, date and source. `fetch(url) -> JSON` is injectable for tests."""
    today = today or _dt.date.today().isoformat()
    fetch = fetch or _http_json
    report = RefreshReport()
    rows = {r.key: r for r in (base if base is not None else load(DEFAULT_TABLE))}

    sky = _find_skypilot(skypilot_dir)
    if sky:
        aws, gcp, azure, quotes = _from_skypilot_dir(sky, today)
        rebuilt = build(aws, gcp, azure, quotes)
        for row in rebuilt:
            rows[row.key] = row
        report.updated["skypilot catalog " + str(sky)] = len(rebuilt)
    else:
        report.skipped["skypilot catalog"] = "no SkyPilot catalog CSV files found (~/.sky/catalogs/v*/<cloud>/vms.csv)"

    if not online:
        report.skipped["provider APIs"] = "offline (--offline)"
    else:
        for name, step in (("AWS Price List (SageMaker)", _refresh_sagemaker),
                           ("Azure Retail Prices", _refresh_azure),
                           ("Google Cloud Billing Catalog", _refresh_gcp)):
            try:
                n = step(rows, fetch, today, gcp_api_key)
            except _Skip as exc:
                report.skipped[name] = str(exc)
            except OSError as exc:
                report.skipped[name] = f"could not reach it ({exc})"
            else:
                report.updated[name] = n
    out = list(rows.values())
    report.path = str(write_csv(out, write_to or user_table()))
    return out, report


class _Skip(Exception):
    pass


def _http_json(url: str) -> Any:
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.quote(parts.query, safe="=&$?'")))
    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (fixed https endpoints)
        return json.load(resp)


def _find_skypilot(where: str | Path | None) -> Path | None:
    candidates = [Path(where).expanduser()] if where else [Path(p).expanduser() for p in SKYPILOT_CATALOG_DIRS]
    for c in candidates:
        if (c / "aws" / "vms.csv").exists() or (c / "gcp" / "vms.csv").exists() or (c / "azure" / "vms.csv").exists():
            return c
    return None


def _from_skypilot_dir(root: Path, today: str):
    def read(cloud: str) -> list[VMPrice]:
        f = root / cloud / "vms.csv"
        if not f.exists():
            return []
        return read_skypilot_csv(f.read_text(encoding="utf-8"), cloud, today, f"SkyPilot catalog {f} (read {today})")
    return read("aws"), read("gcp"), read("azure"), read_quotes((DATA / "quotes.csv").read_text())


def parse_aws_offer(offer: dict[str, Any]) -> dict[tuple[str, str], float]:
    """AWS Price List bulk offer file (AmazonSageMaker) -> {(ml.instance, region code): on-demand USD/h} for
    training usage types (`<REGION>-Train:ml.*`)."""
    out: dict[tuple[str, str], float] = {}
    on_demand = offer.get("terms", {}).get("OnDemand", {})
    for sku, product in offer.get("products", {}).items():
        attrs = product.get("attributes", {})
        m = re.search(r"-Train:(ml\.[\w.-]+)$", attrs.get("usagetype", ""))
        if not m:
            continue
        for term in on_demand.get(sku, {}).values():
            for dim in term.get("priceDimensions", {}).values():
                usd = _num(dim.get("pricePerUnit", {}).get("USD", ""))
                if usd and dim.get("unit", "").lower().startswith("hr"):
                    out[(m.group(1), attrs.get("regionCode", ""))] = usd
    return out


def parse_azure_retail(page: dict[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    """Azure Retail Prices page -> {(armSkuName, armRegionName): {"price": Linux on-demand, "spot": Linux spot}}."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for item in page.get("Items", []):
        if item.get("type") != "Consumption" or "Windows" in item.get("productName", "") \
                or item.get("unitOfMeasure") != "1 Hour" or item.get("currencyCode", "USD") != "USD":
            continue
        sku_name = item.get("skuName", "")
        kind = "spot" if sku_name.endswith(" Spot") else "low_priority" if sku_name.endswith("Low Priority") else "price"
        entry = out.setdefault((item["armSkuName"], item["armRegionName"]), {})
        entry[kind] = float(item["retailPrice"])
    return out


def parse_gcp_skus(page: dict[str, Any]) -> dict[tuple[str, str, bool], float]:
    """Cloud Billing Catalog `services.skus.list` page -> {(catalog GPU name, region, spot): USD per GPU-hour}
    for Compute Engine GPU SKUs ("Nvidia Tesla A100 GPU running in Americas", "Spot Preemptible ...")."""
    out: dict[tuple[str, str, bool], float] = {}
    for sku in page.get("skus", []):
        cat = sku.get("category", {})
        if cat.get("resourceGroup") != "GPU":
            continue
        gpu = _gcp_gpu(sku.get("description", ""))
        if gpu is None:
            continue
        spot = cat.get("usageType") == "Preemptible"
        if cat.get("usageType") not in ("OnDemand", "Preemptible"):
            continue
        for info in sku.get("pricingInfo", [])[:1]:
            rates = info.get("pricingExpression", {}).get("tieredRates", [])
            if not rates:
                continue
            unit = rates[-1]["unitPrice"]
            usd = int(unit.get("units") or 0) + unit.get("nanos", 0) / 1e9
            for region in sku.get("serviceRegions", []):
                out[(gpu, region, spot)] = usd
    return out


_GCP_GPU_WORDS = (("H100 80GB Mega", "H100-MEGA"), ("H100", "H100"), ("H200", "H200"), ("B200", "B200"),
                  ("A100 80GB", "A100-80GB"), ("A100", "A100"), ("L4", "L4"), ("T4", "T4"), ("V100", "V100"))


def _gcp_gpu(description: str) -> str | None:
    if "Commitment" in description or "Reserved" in description or "DWS" in description:
        return None
    for words, name in _GCP_GPU_WORDS:
        if re.search(r"\b" + re.escape(words) + r"\b", description):
            return name
    return None


def _refresh_sagemaker(rows: dict, fetch: Fetch, today: str, _key: Any) -> int:
    regions = sorted({r.region for r in rows.values() if r.target == "sagemaker"})
    n = 0
    for region in regions:
        prices = parse_aws_offer(fetch(AWS_SAGEMAKER_URL.format(region=region)))
        for key, row in list(rows.items()):
            if row.target != "sagemaker" or row.region != region or (row.instance, region) not in prices:
                continue
            price = prices[(row.instance, region)]
            ratio = (row.spot_usd_per_hour / row.usd_per_hour) if row.spot_usd_per_hour and row.usd_per_hour else None
            rows[key] = dataclasses.replace(row, usd_per_hour=price, spot_usd_per_hour=_r(price * ratio) if ratio else None,
                                            date=today, source=f"AWS Price List bulk API, AmazonSageMaker {region}, "
                                            f"Train usage type (fetched {today})" +
                                            ("; spot scaled by the previous spot/on-demand ratio" if ratio else ""))
            n += 1
    return n


def _refresh_azure(rows: dict, fetch: Fetch, today: str, _key: Any) -> int:
    n = 0
    vms = sorted({(r.details.get("vm_size") or r.instance, r.region) for r in rows.values() if r.target == "azureml"})
    for sku, region in vms:
        url = AZURE_RETAIL_URL.format(region=region, sku=sku)
        found: dict = {}
        while url:
            page = fetch(url)
            for k, v in parse_azure_retail(page).items():
                found.setdefault(k, {}).update(v)
            url = page.get("NextPageLink")
        entry = found.get((sku, region))
        if not entry or "price" not in entry:
            continue
        spot = entry.get("spot") or entry.get("low_priority")
        for target, inst in (("azureml", sku), ("skypilot", f"azure:{sku}")):
            row = rows.get((target, inst, region))
            if row is None:
                continue
            rows[(target, inst, region)] = dataclasses.replace(
                row, usd_per_hour=entry["price"], spot_usd_per_hour=spot if spot and spot < entry["price"] else None,
                date=today, source=f"Azure Retail Prices API, {sku} {region}, Linux consumption (fetched {today})")
            n += 1
    return n


def _refresh_gcp(rows: dict, fetch: Fetch, today: str, key: str | None) -> int:
    key = key or os.environ.get("GOOGLE_API_KEY")
    if not key:
        raise _Skip("the Cloud Billing Catalog API needs an API key: set GOOGLE_API_KEY or pass --gcp-api-key")
    per_gpu: dict[tuple[str, str, bool], float] = {}
    token = ""
    while True:
        page = fetch(GCP_SKUS_URL.format(service=GCP_COMPUTE_SERVICE, key=key, token=token))
        per_gpu.update(parse_gcp_skus(page))
        token = page.get("nextPageToken") or ""
        if not token:
            break
    n = 0
    for k, row in list(rows.items()):
        d = row.details
        if row.target != "skypilot" or d.get("cloud") != "gcp":
            continue
        gpu_name, count = d["accelerator"], d["accelerator_count"]
        od = per_gpu.get((gpu_name, row.region, False))
        if od is None:
            continue
        host, host_spot = d["host_usd_per_hour"], d.get("host_spot_usd_per_hour")
        sp = per_gpu.get((gpu_name, row.region, True))
        price = _r(host + od * count)
        spot = _r(host_spot + sp * count) if sp is not None and host_spot is not None else None
        rows[k] = dataclasses.replace(
            row, usd_per_hour=price, spot_usd_per_hour=spot if spot is not None and spot < price else None,
            date=today, details=dict(d, accelerator_usd_per_hour=_r(od * count)),
            source=f"host ${host}/h (previous table) + {count}x {gpu_name} ${od}/GPU-h (Cloud Billing Catalog, "
                   f"Compute Engine GPU SKUs, fetched {today})")
        n += 1
    return n


# --------------------------------------------------------------------------- helpers

def _num(text: str | None) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _r(x: float) -> float:
    return round(x, 6)


def _fmt(x: float | None) -> str:
    return "" if x is None else repr(round(x, 6))
