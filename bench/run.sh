#!/usr/bin/env bash
# Benchmark: crawl the same 20,000-book fixture site, served by nginx, with `crawler crawl`,
# Scrapy and spider-rs at equal concurrency, one after the other in one run, and print a table.
#
#   bench/run.sh                      # BOOKS=20000 CONC=32 RUNS=3
#   BOOKS=5000 RUNS=1 bench/run.sh    # quicker
#   BASELINE=<git rev> bench/run.sh   # also that revision's crawler, side by side
#   SCRAPY=0 bench/run.sh             # without Scrapy (about a minute per run)
#   KILLS=5 bench/run.sh              # then the kill test: SIGKILL a crawl at KILLS random
#                                     # moments, rerun each time, count the extra fetches
#
# Needs (installed when missing): nginx, GNU time, python3-venv; Scrapy from PyPI into
# bench/out/venv; spider-rs built from crates.io in bench/spider-rs (its own target dir).
# Everything listens on 127.0.0.1 only. Medians over RUNS runs are reported.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BOOKS=${BOOKS:-20000}
CONC=${CONC:-32}
RUNS=${RUNS:-3}
SCRAPY=${SCRAPY:-1}
KILLS=${KILLS:-0}
BASELINE=${BASELINE:-}
OUT=$ROOT/bench/out
mkdir -p "$OUT"

need_apt=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
[ -x /usr/bin/time ] || need_apt+=(time)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ "$SCRAPY" = 0 ] || [ -x "$OUT/venv/bin/scrapy" ] || { python3 -m venv "$OUT/venv" && "$OUT/venv/bin/pip" install -q scrapy; }

# The baseline is built first (in the same target directory), the current tree after it.
[ -z "$BASELINE" ] || bench/baseline.sh "$BASELINE" "$OUT/crawler-baseline"
echo "building (release)..." >&2
cargo build --release --locked -q -p crawler -p crawler-fixture
(cd bench/spider-rs && cargo build --release -q)
CRAWLER=$ROOT/target/release/crawler
FIXTURE=$ROOT/target/release/crawler-fixture
SPIDER=$ROOT/bench/spider-rs/target/release/spider-bench

rm -rf "$OUT/site" && "$FIXTURE" generate "$OUT/site" --books "$BOOKS" --tags 20 --per-page 20 >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$FIXTURE" expect "http://127.0.0.1:$PORT" --books "$BOOKS" > "$OUT/expected.jsonl"

mkdir -p "$OUT/nginx"
cat > "$OUT/nginx/nginx.conf" <<NGINX
worker_processes 1;
worker_rlimit_nofile 65536;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log $OUT/nginx/access.log;
  sendfile on;
  tcp_nopush off;
  keepalive_requests 1000000;
  keepalive_timeout 60;
  types { text/html html; text/plain txt; }
  default_type text/plain;
  open_file_cache max=1000 inactive=60s;
  client_body_temp_path $OUT/nginx;
  proxy_temp_path $OUT/nginx;
  fastcgi_temp_path $OUT/nginx;
  uwsgi_temp_path $OUT/nginx;
  scgi_temp_path $OUT/nginx;
  server { listen 127.0.0.1:$PORT; root $OUT/site; }
}
NGINX
"$NGINX" -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx"
trap '"$NGINX" -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx" -s stop 2>/dev/null || true' EXIT
sleep 0.5

sed -e "s/@PORT@/$PORT/" -e "s/@CONC@/$CONC/g" -e "s#@OUT@#$OUT#" bench/crawler.toml.in > "$OUT/crawler.toml"

# run NAME CHECK-KIND CHECK-FILE COMMAND...: one measured run; appends a JSON line to results.
run() {
  local name=$1 kind=$2 file=$3; shift 3
  : > "$OUT/nginx/access.log"
  "$NGINX" -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx" -s reopen
  sleep 0.3
  rm -f "$OUT/crawler.db"* "$OUT/scrapy.jsonl"
  /usr/bin/time -f '%e %U %S %M' -o "$OUT/time.txt" "$@" > "$OUT/$name.stdout" 2> "$OUT/$name.stderr"
  sleep 1.2   # let nginx flush its log
  read -r wall user sys rss_kb < "$OUT/time.txt"
  local requests unique check
  requests=$(wc -l < "$OUT/nginx/access.log")
  unique=$(awk '{print $7}' "$OUT/nginx/access.log" | sort -u | wc -l)
  if [ "$kind" = none ]; then
    check='{"items": 0, "correct": 0, "missing": 0, "wrong": 0}'
  else
    check=$(python3 bench/check.py "$OUT/expected.jsonl" "$kind" "$file")
  fi
  python3 - "$name" "$wall" "$user" "$sys" "$rss_kb" "$requests" "$unique" "$check" >> "$OUT/results.jsonl" <<'PY'
import json, sys
name, wall, user, sys_, rss, req, uniq, check = sys.argv[1:]
c = json.loads(check)
print(json.dumps({"name": name, "wall": float(wall), "cpu": float(user) + float(sys_), "rss_mb": int(rss) / 1024,
                  "requests": int(req), "dups": int(req) - int(uniq), **c}))
PY
  echo "  $name: $(tail -n 1 "$OUT/results.jsonl")" >&2
}

: > "$OUT/results.jsonl"
for i in $(seq "$RUNS"); do
  echo "round $i/$RUNS" >&2
  run crawler sqlite "$OUT/crawler.db" "$CRAWLER" crawl --config "$OUT/crawler.toml"
  if [ -n "$BASELINE" ]; then
    run "crawler $BASELINE" sqlite "$OUT/crawler.db" "$OUT/crawler-baseline" crawl --config "$OUT/crawler.toml"
  fi
  run spider-rs none - "$SPIDER" "http://127.0.0.1:$PORT/index.html" "$CONC"
  if [ "$SCRAPY" != 0 ]; then
    run scrapy jsonl "$OUT/scrapy.jsonl" "$OUT/venv/bin/scrapy" runspider bench/scrapy_books.py \
      -a start="http://127.0.0.1:$PORT/index.html" -o "$OUT/scrapy.jsonl:jsonlines" \
      -s CONCURRENT_REQUESTS="$CONC" -s CONCURRENT_REQUESTS_PER_DOMAIN="$CONC"
  fi
done

python3 - "$OUT/results.jsonl" "$BOOKS" "$CONC" "$RUNS" <<'PY'
import json, statistics, sys, platform, os, subprocess
rows = [json.loads(l) for l in open(sys.argv[1])]
books, conc, runs = sys.argv[2:]
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
print(f"site: {books} books (+ index, tag pages), nginx on 127.0.0.1, concurrency {conc}, median of {runs} run(s)")
print(f"machine: {os.cpu_count()} cores, {cpu_model}, {mem_gb:.0f} GiB RAM, {platform.system()} {platform.release()}")
print()
print("| crawler | wall s | CPU s | pages/s | pages per CPU-s | peak RSS MB | requests | duplicate fetches | items | items correct |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name in dict.fromkeys(r["name"] for r in rows):
    rs = [r for r in rows if r["name"] == name]
    med = lambda k: statistics.median(r[k] for r in rs)
    wall, cpu, req = med("wall"), med("cpu"), med("requests")
    items = "n/a (no extraction)" if name == "spider-rs" else f"{med('items'):.0f}"
    correct = "n/a" if name == "spider-rs" else f"{med('correct'):.0f} / {books}"
    print(f"| {name} | {wall:.2f} | {cpu:.2f} | {req / wall:,.0f} | {req / max(cpu, 0.001):,.0f} | {med('rss_mb'):.0f} | {req:.0f} | {med('dups'):.0f} | {items} | {correct} |")
PY

[ "$KILLS" -gt 0 ] || exit 0

# The kill test: one crawl SIGKILLed at KILLS random moments (when the site has answered a
# random share of the pages, drawn between 5 % and 95 %), started again with the same command
# each time, then let finish. Its table is checked against the generator (as the uninterrupted
# runs above are); extra fetches are requests beyond one per URL, less the robots.txt each
# restart fetches again.
echo "kill test: $KILLS kills" >&2
PAGES=$(python3 -c 'import json,sys; print(max(json.loads(l)["requests"] for l in open(sys.argv[1]) if json.loads(l)["name"]=="crawler"))' "$OUT/results.jsonl")
: > "$OUT/nginx/access.log"
"$NGINX" -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx" -s reopen
sleep 0.3
rm -f "$OUT/crawler.db"*
moments=$(python3 -c "import random; print(' '.join(str(x) for x in sorted(random.sample(range($PAGES * 5 // 100, $PAGES * 95 // 100), $KILLS))))")
k=0
for at in $moments; do
  k=$((k + 1))
  "$CRAWLER" crawl --config "$OUT/crawler.toml" > /dev/null 2> "$OUT/kill-$k.stderr" &
  pid=$!
  while [ "$(wc -l < "$OUT/nginx/access.log")" -lt "$at" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.005; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
"$CRAWLER" crawl --config "$OUT/crawler.toml" > "$OUT/kill-final.stdout" 2> "$OUT/kill-final.stderr"
sleep 1.2
requests=$(wc -l < "$OUT/nginx/access.log")
unique=$(awk '{print $7}' "$OUT/nginx/access.log" | sort -u | wc -l)
robots=$(awk '$7 == "/robots.txt"' "$OUT/nginx/access.log" | wc -l)
check=$(python3 bench/check.py "$OUT/expected.jsonl" sqlite "$OUT/crawler.db")
python3 - "$KILLS" "$requests" "$unique" "$robots" "$check" "$moments" "$OUT/kill-final.stdout" <<'PY'
import json, sys
kills, requests, unique, robots = map(int, sys.argv[1:5])
c = json.loads(sys.argv[5])
moments = sys.argv[6]
summary = json.loads(open(sys.argv[7]).read().strip().splitlines()[-1])
extra = requests - unique - (robots - 1)
print()
print(f"kill test: SIGKILL when the site had answered {moments} requests, then run to the end (resumed: {summary['resumed']})")
print()
print("| kills | requests | distinct URLs | extra fetches | extra % of pages | items | items correct |")
print("|---:|---:|---:|---:|---:|---:|---:|")
print(f"| {kills} | {requests} | {unique} | {extra} | {100 * extra / unique:.2f} % | {c['items']} | {c['correct']} (missing {c['missing']}, wrong {c['wrong']}) |")
PY
