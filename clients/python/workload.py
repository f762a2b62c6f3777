"""A writer workload through reshard_client, for tests/python_client.rs.

Two writers with separate clients (separate routing caches, as two application processes
would have): one inserts ``orders`` rows for random users; the other deletes about half of
them, each a little while after its insert was acknowledged, so that an insert made before a
flip is often deleted after it, at the other owner. The failure this catches is issue 13's: a
stale DELETE at the old owner that matches no row and is acknowledged anyway.

The inserter checks the routing version more often than the deleter (which keeps the client's
default, the staleness every writer is allowed), and deletes follow inserts closely: so right
after a flip, rows inserted at the new owner are often deleted through a routing that still
names the old one. Only the ownership assertion refuses those deletes.

Every acknowledged operation is one line of the log, written after the commit returned:

    insert USER ORDER SHARD VERSION
    delete USER ORDER ROWS SHARD VERSION

It runs until the --stop file exists, then prints a summary line and exits 0 (1 on any error
the client did not retry away).
"""

import argparse
import heapq
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reshard_client  # noqa: E402


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1, encoding="utf-8")
        self.lock = threading.Lock()

    def line(self, *fields):
        with self.lock:
            self.f.write(" ".join(str(x) for x in fields) + "\n")


def inserter(args, log, pending, lock, stop, errors):
    client = reshard_client.Client(args.catalog, check_interval=args.inserter_check_interval)
    rng = random.Random(args.seed)
    order = args.first_order
    try:
        while not stop.is_set():
            user, order = rng.randint(1, args.users), order + 1
            note = f"py {order}"

            def insert(cur, user=user, order=order, note=note):
                cur.execute(
                    "INSERT INTO orders (user_id, order_id, note) VALUES (%s, %s, %s)",
                    (user, order, note),
                )

            shard, version, _ = client.write(user, insert)
            log.line("insert", user, order, shard, version)
            if rng.random() < 0.5:
                due = time.monotonic() + rng.uniform(0, args.max_delete_lag)
                with lock:
                    heapq.heappush(pending, (due, user, order))
            time.sleep(1 / args.rate)
    except Exception as e:  # reported, and the exit code says so
        errors.append(f"inserter: {e!r}")
    finally:
        stop.set()
        log.line("# inserter fence_retries", client.fence_retries)
        client.close()


def deleter(args, log, pending, lock, stop, errors):
    client = reshard_client.Client(args.catalog)
    try:
        while True:
            with lock:
                ready = pending and pending[0][0] <= time.monotonic()
                item = heapq.heappop(pending) if ready else None
            if item is None:
                if stop.is_set():
                    return  # undeleted inserts stay: the checker expects them present
                time.sleep(0.002)
                continue
            _, user, order = item

            def delete(cur, user=user, order=order):
                cur.execute(
                    "DELETE FROM orders WHERE user_id = %s AND order_id = %s", (user, order)
                )
                return cur.rowcount

            shard, version, rows = client.write(user, delete)
            log.line("delete", user, order, rows, shard, version)
    except Exception as e:
        errors.append(f"deleter: {e!r}")
        stop.set()
    finally:
        log.line("# deleter fence_retries", client.fence_retries)
        client.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--stop", required=True, help="stop once this file exists")
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--first-order", type=int, default=1000)
    p.add_argument("--rate", type=float, default=300.0, help="inserts per second, at most")
    p.add_argument("--max-delete-lag", type=float, default=0.03, help="seconds")
    p.add_argument("--inserter-check-interval", type=float, default=0.01, help="seconds")
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args()
    log, pending, lock = Log(args.log), [], threading.Lock()
    stop, errors = threading.Event(), []
    threads = [
        threading.Thread(target=f, args=(args, log, pending, lock, stop, errors))
        for f in (inserter, deleter)
    ]
    for t in threads:
        t.start()
    while not stop.is_set() and not os.path.exists(args.stop):
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    for e in errors:
        print(e, file=sys.stderr)
    print("workload done" if not errors else "workload failed")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
