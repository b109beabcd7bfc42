"""The platform's own SDK (``picsellia==6.37.0``) downloading a dataset version, as users do.

    PICSELLIA_TOKEN=... python benchmarks/sdk_download.py --api-url URL --dataset-version ID \\
        --dest DIR [--max-workers N]

``DatasetVersion.download`` lists the assets, then fetches them with a thread pool of
``requests`` (``max_workers`` defaults to ``os.cpu_count() + 4``, what a user gets).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description="platform SDK download")
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--dataset-version", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--max-workers", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from picsellia import Client

    client = Client(api_token=os.environ["PICSELLIA_TOKEN"], host=args.api_url)
    version = client.get_dataset_version_by_id(args.dataset_version)
    version.download(target_path=args.dest, max_workers=args.max_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
