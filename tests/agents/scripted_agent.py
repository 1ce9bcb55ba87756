#!/usr/bin/env python3
"""A test agent whose behaviour the task chooses: talk (one chat turn per `turns`), hang, fail,
or print garbage. Standard library only, so it runs wherever python3 does."""

import json
import os
import sys
import time
import urllib.request

task = json.load(sys.stdin)
mode = task.get("mode", "talk")
if mode == "hang":
    with open(task["pidfile"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(1000)
if mode == "fail":
    print("something went wrong", file=sys.stderr)
    sys.exit(3)
if mode == "garbage":
    print("the answer is 42")
    sys.exit(0)
base = os.environ["OPENAI_BASE_URL"]
key = os.environ["OPENAI_API_KEY"]
messages = [{"role": "user", "content": task.get("prompt", "hello")}]
for _ in range(int(task.get("turns", 1))):
    body = json.dumps({"model": "policy", "messages": messages, "max_tokens": 8}).encode()
    req = urllib.request.Request(
        base + "/chat/completions",
        data=body,
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"},
    )
    answer = json.load(urllib.request.urlopen(req, timeout=30))
    messages.append(answer["choices"][0]["message"])
    messages.append({"role": "user", "content": "more"})
print(json.dumps({"reward": float(task.get("reward", 1.0))}))
