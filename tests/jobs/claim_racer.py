"""One of several processes racing to claim every queued job (tests/jobs): prints the ids it won, as JSON.

    python claim_racer.py WORKER_ID     (the database: VIPR_HOME's vipr.db, or VIPR_DB_URL)
"""

import json
import sys

from vipr.jobs import store

if __name__ == "__main__":
    won = [job["id"] for job in store.list_jobs(("queued",)) if store.claim(job["id"], sys.argv[1], "host")]
    print(json.dumps(won))
