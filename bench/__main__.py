"""``python -m bench``: runs every benchmark, prints JSON, keeps it in bench/results/."""

from __future__ import annotations

import json
from pathlib import Path

from bench import (
    embedded_latency,
    http_wrk,
    k8s_api_calls,
    lifecycle,
    listing_round_trips,
    runner_ide,
)
from tests.support.redis_server import running_redis as redis_server


def main() -> None:
    results = {}
    with redis_server() as url:
        results.update(listing_round_trips.run(url))
        results.update(http_wrk.run(url))
        results.update(lifecycle.run(url))
    results.update(embedded_latency.run())
    results.update(runner_ide.run())
    results.update(k8s_api_calls.run())
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
