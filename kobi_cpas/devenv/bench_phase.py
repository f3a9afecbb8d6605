"""What the benchmark phases share: running a phase's code in a fresh interpreter (its peak memory its own), the
demo tenant's registry for a feed, and the generated feed of the snapshot and sync benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def subprocess_json(code: str, *args: str) -> dict:
    """Run ``code`` with ``args`` in a new interpreter; its last line of output, as JSON."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark phase failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def demo_tenant_registry(work: Path, feed: Path) -> Path:
    """A registry of the demo's first tenant (its ids exist in the sandbox world) fed from ``feed``, written to
    ``work``/tenants.yaml."""
    import yaml

    demo = yaml.safe_load((REPO_ROOT / "kobi_cpas" / "data" / "demo" / "tenants.yaml").read_text())
    tenant = demo["tenants"][0]
    tenant["feed"] = {"source": str(feed), "format": "csv", "feeds_root": str(feed.parent)}
    path = work / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [tenant]}))
    return path


def snapshot_feed(out: Path, n: int) -> Path:
    """The ``n``-item feed of the snapshot and replace upload benchmarks (seed 42), generated once."""
    from kobi_cpas.feeds.generator import generate_feed

    feed = out / "snapshot" / f"snap_a_{n}.csv"
    if not feed.exists():
        feed.parent.mkdir(parents=True, exist_ok=True)
        generate_feed(feed, n, seed=42)
    return feed
