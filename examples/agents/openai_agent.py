#!/usr/bin/env python3
"""An agent for `fleet run`, written with the official `openai` package.

fleet runs it once per episode with OPENAI_BASE_URL (the rollout worker's proxy) and
OPENAI_API_KEY (this episode's session key) in its environment and the task as JSON on stdin.
Every request it makes is recorded by the proxy (token ids, logprobs, policy version); at the
end it prints its rewards, one per turn, as the last line of stdout.
"""

import json
import sys

from openai import OpenAI


def main() -> None:
    task = json.load(sys.stdin)
    client = OpenAI()  # reads OPENAI_BASE_URL and OPENAI_API_KEY
    messages = [{"role": "user", "content": task.get("prompt", "Say something.")}]
    rewards = []
    for _ in range(int(task.get("turns", 2))):
        answer = client.chat.completions.create(model="policy", messages=messages, max_tokens=16)
        text = answer.choices[0].message.content or ""
        messages.append({"role": "assistant", "content": text})
        messages.append({"role": "user", "content": "Go on."})
        # A toy reward: longer answers are better.
        rewards.append(min(1.0, len(text.split()) / 16))
    print(json.dumps({"rewards": rewards}))


if __name__ == "__main__":
    main()
