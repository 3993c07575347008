#!/usr/bin/env bash
# Benchmark: one task over HOSTS sites on loopback (127.0.1.1 ... 127.0.1.HOSTS, one
# crawler-fixture process) answering after LATENCY ms, where the first site answers after SLOW
# ms instead and the second allows LIMIT requests a second (429 with Retry-After: 1 beyond).
# The crawler, the BASELINE revision of it (when set) and Scrapy crawl it one after the other
# at equal concurrency and per-host limits; the table compares each wall time with the bound:
# the longest of the slow site's chain (robots.txt, index, tag page, then BOOKS books PER_HOST
# at a time, SLOW ms each), the rate-limited site's pages at LIMIT a second, and all pages at
# LATENCY ms each, CONC at a time.
#
#   bench/hosts.sh          # HOSTS=100 BOOKS=10 LATENCY=0 SLOW=2000 LIMIT=2 CONC=32 PER_HOST=2
#   BASELINE=<git rev> SCRAPY=0 bench/hosts.sh
#
# Needs what bench/run.sh installs (GNU time; Scrapy in bench/out/venv unless SCRAPY=0).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out/hosts
HOSTS=${HOSTS:-100}
BOOKS=${BOOKS:-10}
SLOW=${SLOW:-2000}
LATENCY=${LATENCY:-0}
LIMIT=${LIMIT:-2}
CONC=${CONC:-32}
PER_HOST=${PER_HOST:-2}
SCRAPY=${SCRAPY:-1}
BASELINE=${BASELINE:-}
mkdir -p "$OUT"

[ -x /usr/bin/time ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
[ "$SCRAPY" = 0 ] || [ -x "$ROOT/bench/out/venv/bin/scrapy" ] || { python3 -m venv "$ROOT/bench/out/venv" && "$ROOT/bench/out/venv/bin/pip" install -q scrapy; }
[ -z "$BASELINE" ] || bench/baseline.sh "$BASELINE" "$ROOT/bench/out/crawler-baseline"
echo "building (release)..." >&2
cargo build --release --locked -q -p crawler -p crawler-fixture
CRAWLER=$ROOT/target/release/crawler
FIXTURE=$ROOT/target/release/crawler-fixture

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.1.1", 0)); print(s.getsockname()[1])')
"$FIXTURE" hosts "127.0.1:$PORT" "$HOSTS" --books "$BOOKS" --tags 1 --per-page "$BOOKS" \
  --latency "$LATENCY" --slow "$SLOW" --limit "$LIMIT" > "$OUT/fixture.log" 2>&1 &
FIXTURE_PID=$!
trap 'kill "$FIXTURE_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q serving "$OUT/fixture.log" && break; sleep 0.1; done

SEEDS=$(python3 -c "print(', '.join(f'\"http://127.0.1.{i}:$PORT/index.html\"' for i in range(1, $HOSTS + 1)))")
cat > "$OUT/crawler.toml" <<TOML
[engine]
concurrency = $CONC
per_host = $PER_HOST
retries = 2
timeout = "10s"

[storage]
url = "sqlite://$OUT/crawler.db"

[[task]]
name = "books"
seeds = [$SEEDS]
max_depth = 100

  [[task.rule]]
  name = "index"
  follow = [{ select = "a.tag", rule = "tag" }]

  [[task.rule]]
  name = "tag"
  follow = [{ select = "a.book", rule = "book" }, { select = "a.next", rule = "tag" }]

  [[task.rule]]
  name = "book"
  table = "book"
  fields = { title = "h1.title" }
TOML

# run NAME COMMAND...: wall and CPU time of one run, and the items it stored.
run() {
  local name=$1; shift
  rm -f "$OUT/crawler.db"* "$OUT/scrapy.jsonl"
  /usr/bin/time -f '%e %U %S %M' -o "$OUT/time.txt" "$@" > "$OUT/$name.stdout" 2> "$OUT/$name.stderr" || true
  read -r wall user sys rss_kb < "$OUT/time.txt"
  local items
  if [ -f "$OUT/scrapy.jsonl" ]; then items=$(wc -l < "$OUT/scrapy.jsonl");
  else items=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from book').fetchone()[0])" "$OUT/crawler.db"); fi
  echo "$name $wall $user $sys $rss_kb $items" >> "$OUT/results.txt"
  echo "  $name: ${wall}s, $items items" >&2
}

: > "$OUT/results.txt"
run crawler "$CRAWLER" crawl --config "$OUT/crawler.toml"
[ -z "$BASELINE" ] || run "crawler-$BASELINE" "$ROOT/bench/out/crawler-baseline" crawl --config "$OUT/crawler.toml"
if [ "$SCRAPY" != 0 ]; then
  STARTS=$(python3 -c "print(','.join(f'http://127.0.1.{i}:$PORT/index.html' for i in range(1, $HOSTS + 1)))")
  run scrapy "$ROOT/bench/out/venv/bin/scrapy" runspider bench/scrapy_books.py -a start="$STARTS" \
    -o "$OUT/scrapy.jsonl:jsonlines" -s CONCURRENT_REQUESTS="$CONC" -s CONCURRENT_REQUESTS_PER_DOMAIN="$PER_HOST" \
    -s CONCURRENT_REQUESTS_PER_IP=0
fi

python3 - "$OUT/results.txt" "$HOSTS" "$BOOKS" "$SLOW" "$LIMIT" "$CONC" "$PER_HOST" "$LATENCY" <<'PY'
import math, sys
rows = [l.split() for l in open(sys.argv[1])]
hosts, books, slow, limit, conc, per_host, latency = map(int, sys.argv[2:])
chain = slow / 1000 * (3 + math.ceil(books / per_host))
limited = (books + 3) / limit
work = hosts * (books + 3) * latency / 1000 / conc
bound = max(chain, limited, work)
print(f"{hosts} sites on 127.0.1.x, {books} books each, {latency} ms a page; site 1 answers after {slow} ms,")
print(f"site 2 allows {limit} requests/s; concurrency {conc}, {per_host} per host;")
print(f"bound: {bound:.1f} s (slow site's chain {chain:.1f} s, rate-limited site {limited:.1f} s, all pages {work:.1f} s)")
print()
print("| crawler | wall s | over the bound | CPU s | peak RSS MB | items (of %d) |" % (hosts * books))
print("|---|---:|---:|---:|---:|---:|")
for name, wall, user, sys_, rss, items in rows:
    print(f"| {name} | {float(wall):.2f} | {100 * (float(wall) / bound - 1):+.0f} % | {float(user) + float(sys_):.2f} | {int(rss) / 1024:.0f} | {items} |")
PY
