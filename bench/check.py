"""Checks a crawler's items against the fixture's expected items and prints one JSON line:
{"items": N, "correct": N, "missing": N, "wrong": N}.

usage: check.py EXPECTED.jsonl (sqlite DB | jsonl FILE)
"""

import json
import sqlite3
import sys

FIELDS = ("title", "author", "price", "rating")


def load_items(kind, path):
    if kind == "sqlite":
        con = sqlite3.connect(path)
        for url, *vals in con.execute("SELECT url, title, author, price, rating FROM book"):
            yield dict(zip(("url",) + FIELDS, [url, *vals]))
    else:
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def main():
    expected = {}
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            e = json.loads(line)
            expected[e["url"]] = e
    got, correct, wrong = 0, 0, 0
    seen = set()
    for item in load_items(sys.argv[2], sys.argv[3]):
        got += 1
        e = expected.get(item["url"])
        if e is None or item["url"] in seen or any(item.get(k) != e[k] for k in FIELDS):
            wrong += 1
            if wrong <= 3:
                print("wrong:", item, "expected:", e, file=sys.stderr)
        else:
            correct += 1
        seen.add(item["url"])
    print(json.dumps({"items": got, "correct": correct, "missing": len(expected) - correct, "wrong": wrong}))


main()
