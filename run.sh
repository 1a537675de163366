#!/bin/bash
B=$1; P=$2; export XFER_KEY="benchmark key, long enough not to warn"
rm -rf out; mkdir out
strace -f -tt -o /tmp/st/trace.out $B recv --listen 127.0.0.1:$P --dir out 2>recv.err & SP=$!
sleep 1
$B send --json tree 127.0.0.1:$P > send.json 2>/dev/null & CP=$!
sleep 2; pkill -TERM -f "recv --listen 127.0.0.1:$P"; wait $CP; wait $SP
echo "on disk: $(find out -type f ! -name '.xfer*' | wc -l)  sender: $(tail -1 send.json | python3 -c 'import sys,json; d=json.loads(sys.stdin.read()); print(d.get("files"), "unfinished", d.get("unfinished"))')"
