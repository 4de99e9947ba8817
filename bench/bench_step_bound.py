"""What the instruction step costs for a long prompt, read whole (as before the bound) and as
``proxy.guard.bounded_turn`` cuts it (``INSTRUCTION_READ_CHARS``), in one run.

The generator is built as the gateway builds it (``proxy.services.build_services``: the request
reader, the judge's second look, in-process caches); each prompt is distinct (no cache hit). The
prompt is the review's: a grievance padded with "revenge hurt kill neighbour" to ~420 KB, whose
reading falls in the second look's band, so the judge read it window by window. Prints the
process CPU seconds and wall seconds of one ``generate`` each way, and their ratio.

    python bench/bench_step_bound.py [--chars 420000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import time

from harness import cpu_model  # also puts the tree first on sys.path

from proxy.guard import INSTRUCTION_READ_CHARS, bounded_turn
from proxy.services import build_services
from proxy.settings import Deployment, GatewayConfig
from vilmo.instruct.instructions import InstructionGenerator
from vilmo.policy import Policy
from vilmo.types import Messages

PAD = "revenge hurt kill neighbour "


def timed(generator: InstructionGenerator, messages: Messages, policy: Policy,
          ) -> tuple[float, float]:
    """Process CPU seconds and wall seconds of one ``generate``."""
    cpu, wall = time.process_time(), time.perf_counter()
    generator.generate(messages, policy)
    return time.process_time() - cpu, time.perf_counter() - wall


def prompt(tag: str, chars: int) -> Messages:
    """A distinct padded prompt of about ``chars`` characters."""
    head = f"{tag} {time.time()} "
    return [{"role": "user", "content": head + PAD * (chars // len(PAD))}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chars", type=int, default=420_000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    config = GatewayConfig(model_list=[Deployment(model_name="m",
                                                  litellm_params={"model": "openai/stub"})])
    services = build_services(config)
    generator, policy = services.instructions, services.policies.get("default")
    print(f"cpu: {cpu_model()}; prompt {args.chars} characters; bound "
          f"{INSTRUCTION_READ_CHARS}")
    for round_ in range(args.rounds):
        bounded_cpu, bounded_wall = timed(
            generator, bounded_turn(prompt("bounded", args.chars)), policy)
        whole_cpu, whole_wall = timed(generator, prompt("whole", args.chars), policy)
        print(f"round {round_}: whole {whole_cpu:.2f} CPU-s ({whole_wall:.2f} s wall), bounded "
              f"{bounded_cpu:.3f} CPU-s ({bounded_wall:.3f} s wall): whole / bounded CPU "
              f"{whole_cpu / max(bounded_cpu, 1e-9):.0f}x")

if __name__ == "__main__":
    main()
