"""Every input we parse, fed seeded damage (tests/fuzz_inputs.py, in a child
process so a segfault or a hang is a failure with its case named, not a
dead test run): each case must end in a one-line error naming the file, a
counted skip, or a clean read."""
import collections
import subprocess
import sys

import pytest

from conftest import ROOT

KINDS = ("image", "label", "config", "infer_cfg", "wider_predictions", "wider_mat", "weights")


def run_fuzz(work, seed=0):
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz_inputs.py"), "--seed", str(seed),
                          "--work", str(work)], capture_output=True, text=True, timeout=400)
    cases, outcomes, bad, current = collections.Counter(), collections.Counter(), [], None
    for line in run.stdout.splitlines():
        if line.startswith("CASE "):
            current = line
            cases[line.split()[1]] += 1
        elif line.startswith("RESULT ") and current:
            outcome = line.split()[1]
            outcomes[(current.split()[1], outcome)] += 1
            if outcome == "BAD":
                bad.append(f"{current}\n    {line}")
            current = None
    return run, cases, outcomes, bad, current


@pytest.mark.slow
def test_fuzzed_inputs_end_in_named_errors_or_counted_skips(tmp_path):
    run, cases, outcomes, bad, unfinished = run_fuzz(tmp_path)
    print(f"\nfuzz cases per input kind (seed 0): {dict(cases)} = {sum(cases.values())} in all")
    for kind in KINDS:
        print(f"  {kind:18s}" + "  ".join(f"{o} {outcomes[(kind, o)]}" for o in ("ERROR", "SKIP", "OK")
                                          if outcomes[(kind, o)]))
    assert run.returncode == 0, (f"the fuzzer died (status {run.returncode}) during: {unfinished}\n"
                                 f"{run.stderr[-3000:]}")
    assert not bad, f"{len(bad)} cases ended badly:\n" + "\n".join(bad[:20])
    for kind in KINDS:
        assert cases[kind] >= 10, f"{kind}: only {cases[kind]} cases ran"
        assert outcomes[(kind, "ERROR")] + outcomes[(kind, "SKIP")] > 0, f"{kind}: no damage was ever noticed"


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    """Nine levels of nine aliases are a few lines of YAML and 387 million values."""
    from ppfacedet.core.config import load_config
    from ppfacedet.core.errors import ConfigError
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="more than 100000 values"):
        load_config(str(path))
