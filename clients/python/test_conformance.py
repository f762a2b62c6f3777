"""The client's routing agrees, key for key, with the Rust router's answers recorded in
tests/fixtures/routing_conformance.json (written by tests/routing_conformance.rs), at every
routing version of every recorded job. No database: the fixture carries each live_routing row.

Run: python3 -m unittest clients/python/test_conformance.py (tests/python_client.rs does).
"""

import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import reshard_client  # noqa: E402

FIXTURE = os.path.join(HERE, "..", "..", "tests", "fixtures", "routing_conformance.json")


def load_fixture():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


def evaluate(row, key):
    """The client's answer for one fixture key; None where it refuses the key."""
    try:
        return reshard_client.Routing([row]).route(key)
    except reshard_client.RouteError:
        return None


class Conformance(unittest.TestCase):
    def test_every_key_at_every_version(self):
        fixture = load_fixture()
        checked = 0
        for job in fixture["jobs"]:
            for entry in job["versions"]:
                routing = reshard_client.Routing([entry])
                self.assertEqual(routing.version, entry["version"])
                self.assertEqual(len(job["keys"]), len(entry["owners"]))
                for key, want in zip(job["keys"], entry["owners"]):
                    try:
                        got = routing.route(key)
                    except reshard_client.RouteError:
                        got = None
                    self.assertEqual(
                        got, want, f"{job['name']}, {entry['label']}, key {key!r}"
                    )
                    checked += 1
        # Guards against a fixture emptied by mistake, which would pass anything.
        self.assertGreater(checked, 1000)

    def test_fixture_exercises_refusals_and_flips(self):
        fixture = load_fixture()
        owners = [o for j in fixture["jobs"] for v in j["versions"] for o in v["owners"]]
        self.assertIn(None, owners, "no key the router refuses")
        flips = [v for j in fixture["jobs"] for v in j["versions"] if v["flipped"] not in (None, "[]")]
        self.assertTrue(flips, "no version with flipped moves")

    def test_a_wrong_rule_is_caught(self):
        # The check above must be able to fail: routing every key by map_json alone (the
        # mistake docs/catalog.md once invited) disagrees somewhere while moves are flipped.
        fixture = load_fixture()
        wrong = 0
        for job in fixture["jobs"]:
            for entry in job["versions"]:
                stale = dict(entry, from_map=None)
                for key, want in zip(job["keys"], entry["owners"]):
                    if want is not None and evaluate(stale, key) != want:
                        wrong += 1
        self.assertGreater(wrong, 0)


if __name__ == "__main__":
    unittest.main()
