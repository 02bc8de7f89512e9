"""The GPU catalog and the dated price tables: coverage, provenance, and refresh against recorded API responses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest

from ftlaunch.core import errors
from ftlaunch.core import gpus
from ftlaunch.planning.catalog import prices

FIXTURES = Path(__file__).parent / "fixtures" / "prices"
REQUIRED_GPUS = ("T4", "L4", "A10G", "A10", "L40S", "A100", "A100-80GB", "H100", "H100-PCIE", "H100-NVL", "H200", "B200")


def test_gpu_catalog_covers_the_issue_list_with_sources():
    for name in REQUIRED_GPUS:
        g = gpus.get(name)
        assert g.memory_gb > 10 and g.bf16_tflops > 50 and g.bandwidth_gbps >= 300 and g.interconnect
        assert g.source
    assert gpus.get("h100").bf16_tflops == pytest.approx(989.4)  # dense, not the 1,979 sparse figure
    assert gpus.get("a100-80gb").memory_gb > gpus.get("a100").memory_gb
    assert not gpus.get("t4").bf16
    with pytest.raises(errors.UserError, match="unknown GPU"):
        gpus.get("tpu-v9")


def test_shipped_table_is_what_build_default_makes():
    """data/prices.csv is generated from the shipped extracts and quotes; the two must not drift apart."""
    shipped = {r.key: r for r in prices.load(prices.DEFAULT_TABLE)}
    rebuilt = {r.key: r for r in prices.build_default()}
    assert shipped.keys() == rebuilt.keys()
    for key, row in rebuilt.items():
        assert shipped[key] == row, key


def test_every_row_has_a_date_a_source_and_a_known_gpu():
    rows = prices.load(prices.DEFAULT_TABLE)
    assert {r.target for r in rows} == set(prices.TARGETS)
    for r in rows:
        assert r.date and r.source, r
        assert gpus.find(r.gpu) is not None, r
        assert r.usd_per_hour and r.usd_per_hour > 0, r
        assert r.spot_usd_per_hour is None or r.spot_usd_per_hour < r.usd_per_hour, r
        if r.source.startswith("derived"):
            assert " x " in r.source  # says what it was derived from and by which factor


def test_provider_names_and_render_fields():
    rows = {(r.target, r.instance): r for r in prices.load(prices.DEFAULT_TABLE)}
    assert ("sagemaker", "ml.p4d.24xlarge") in rows
    vertex = rows[("vertex", "a2-highgpu-1g")]
    assert vertex.details == {"machine_type": "a2-highgpu-1g", "accelerator_type": "NVIDIA_TESLA_A100",
                              "accelerator_count": 1}
    assert rows[("azureml", "Standard_NC24ads_A100_v4")].gpu == "A100-80GB"
    assert rows[("skypilot", "aws:p4d.24xlarge")].details["instance_type"] == "p4d.24xlarge"
    # the catalog's 12-GPU ND H100 v5 row is corrected to 8
    assert rows[("azureml", "Standard_ND96isr_H100_v5")].gpus == 8


def test_managed_prices_follow_their_rules():
    rows = {(r.target, r.instance, r.region): r for r in prices.load(prices.DEFAULT_TABLE)}
    ec2 = rows[("skypilot", "aws:p4d.24xlarge", "us-east-1")].usd_per_hour
    sm = rows[("sagemaker", "ml.p4d.24xlarge", "us-east-1")]
    assert sm.usd_per_hour == pytest.approx(ec2 * 1.15, rel=1e-6)
    assert rows[("sagemaker", "ml.g5.xlarge", "us-east-1")].usd_per_hour == 1.408  # quoted, not derived
    h100 = rows[("vertex", "a3-highgpu-8g", "us-central1")]
    assert h100.usd_per_hour == pytest.approx(9.46006 * 1.15 + 8 * 9.79655057, rel=1e-6)
    assert rows[("azureml", "Standard_NC24ads_A100_v4", "eastus")].usd_per_hour == \
        rows[("skypilot", "azure:Standard_NC24ads_A100_v4", "eastus")].usd_per_hour


def test_skypilot_csv_parsing_folds_zones_and_skips_local_zones():
    text = (FIXTURES.parent.parent.parent.parent / "launcher/planning/catalog/data/skypilot/aws_vms.csv").read_text()
    vms = {(v.instance, v.region): v for v in prices.read_skypilot_csv(text, "aws", "d", "s")}
    p5 = vms[("p5.48xlarge", "us-east-1")]
    assert p5.price == 55.04
    # the atl2 local zone (10.2397) and the no-discount zones (55.04) are left out of the median
    assert p5.spot_range == (17.6289, 25.7522)
    assert vms[("p5.4xlarge", "us-east-1")].spot is None


class FakeAPIs:
    """Answers the refresh's HTTP GETs from recorded responses, and records what was asked."""

    def __init__(self):
        self.urls: list[str] = []

    def __call__(self, url: str):
        self.urls.append(url)
        u = unquote(url)
        if "pricing.us-east-1.amazonaws.com" in u and "AmazonSageMaker" in u:
            return json.loads((FIXTURES / "aws_sagemaker_us-east-1.json").read_text())
        if "prices.azure.com" in u:
            if "$skip=100" in u:
                return json.loads((FIXTURES / "azure_retail_page2.json").read_text())
            if "Standard_NC24ads_A100_v4" in u and "eastus" in u:
                return json.loads((FIXTURES / "azure_retail_page1.json").read_text())
            return {"Items": [], "NextPageLink": None, "Count": 0}
        if "cloudbilling.googleapis.com" in u:
            page = "gcp_skus_page2.json" if "pageToken=page-2" in u else "gcp_skus_page1.json"
            return json.loads((FIXTURES / page).read_text())
        raise AssertionError(f"unexpected URL {url}")


def test_refresh_from_recorded_api_responses(tmp_path):
    fake = FakeAPIs()
    rows, report = prices.refresh(fetch=fake, gcp_api_key="test-key", today="2026-12-01",
                                  write_to=tmp_path / "prices.csv", skypilot_dir=tmp_path / "none")
    by_key = {r.key: r for r in rows}
    sm = by_key[("sagemaker", "ml.p4d.24xlarge", "us-east-1")]
    assert sm.usd_per_hour == 25.2 and sm.date == "2026-12-01" and "AWS Price List" in sm.source
    assert by_key[("sagemaker", "ml.g5.xlarge", "us-east-1")].usd_per_hour == 1.5
    az = by_key[("azureml", "Standard_NC24ads_A100_v4", "eastus")]
    assert (az.usd_per_hour, az.spot_usd_per_hour) == (3.9, 0.5)  # Linux consumption, not Windows or reserved
    assert by_key[("skypilot", "azure:Standard_NC24ads_A100_v4", "eastus")].usd_per_hour == 3.9
    gcp = by_key[("skypilot", "gcp:a2-highgpu-8g", "us-central1")]
    assert gcp.usd_per_hour == pytest.approx(5.91582 + 8 * 3.1)
    assert gcp.spot_usd_per_hour == pytest.approx(2.958 + 8 * 1.2)
    a100_80 = by_key[("skypilot", "gcp:a2-ultragpu-1g", "us-central1")]
    assert a100_80.usd_per_hour == pytest.approx(1.09962 + 5.07)
    untouched = by_key[("vertex", "a3-highgpu-8g", "us-central1")]
    assert untouched.date == prices.EXTRACT_DATE
    assert report.updated["AWS Price List (SageMaker)"] == 2
    assert report.updated["Azure Retail Prices"] == 2
    assert any("pageToken=page-2" in u for u in fake.urls)
    # written where load() finds it, and read back identically
    assert {r.key: r for r in prices.load(tmp_path / "prices.csv")} == by_key


def test_refresh_without_a_gcp_key_skips_it_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    _, report = prices.refresh(fetch=FakeAPIs(), write_to=tmp_path / "p.csv", skypilot_dir=tmp_path / "none")
    assert "GOOGLE_API_KEY" in report.skipped["Google Cloud Billing Catalog"]


def test_refresh_offline_from_skypilot_catalog_files(tmp_path, ftlaunch_home):
    sky = tmp_path / "catalogs" / "v8"
    for cloud in ("aws", "gcp", "azure"):
        (sky / cloud).mkdir(parents=True)
        shutil.copy(prices.DATA / "skypilot" / f"{cloud}_vms.csv", sky / cloud / "vms.csv")
    text = (sky / "aws" / "vms.csv").read_text().replace(",21.957642,", ",20.0,")
    (sky / "aws" / "vms.csv").write_text(text)
    rows, report = prices.refresh(online=False, skypilot_dir=sky, today="2026-12-02")
    by_key = {r.key: r for r in rows}
    assert by_key[("skypilot", "aws:p4d.24xlarge", "us-east-1")].usd_per_hour == 20.0
    assert by_key[("sagemaker", "ml.p4d.24xlarge", "us-east-1")].usd_per_hour == pytest.approx(23.0)
    assert by_key[("skypilot", "aws:p4d.24xlarge", "us-east-1")].date == "2026-12-02"
    assert report.skipped["provider APIs"].startswith("offline")
    # load() now prefers the refreshed user table
    assert prices.user_table().exists()
    assert {r.key: r for r in prices.load()}[("skypilot", "aws:p4d.24xlarge", "us-east-1")].usd_per_hour == 20.0


def test_parsers_ignore_what_is_not_a_training_hour():
    offer = json.loads((FIXTURES / "aws_sagemaker_us-east-1.json").read_text())
    assert prices.parse_aws_offer(offer) == {("ml.p4d.24xlarge", "us-east-1"): 25.2, ("ml.g5.xlarge", "us-east-1"): 1.5}
    gcp = prices.parse_gcp_skus(json.loads((FIXTURES / "gcp_skus_page1.json").read_text()))
    assert gcp == {("A100", "us-central1", False): 3.1, ("A100", "us-east1", False): 3.1}
