"""DDSAR-scored evolutionary search over MasterNet structures."""
import random
import sys
from pathlib import Path

import paddle
import pytest

from ppfacedet.modeling.backbones.masternet import MasterNet, check_chain, parse_structure, structure_cost
from ppfacedet.modeling.flops import count_flops
from ppfacedet.search.ddsar import ddsar_score, stage_scores
from ppfacedet.search.evolution import VGA_PIXELS, SearchConfig, search
from ppfacedet.search.space import SEEDS, block_choices, mutate, split_deep_blocks

# appended, not inserted first: tools/infer.py must not shadow deploy/python/infer.py
sys.path.append(str(Path(__file__).resolve().parents[1] / "tools"))
import search as search_tool  # noqa: E402  (tools/search.py)

# Published DamoFD backbones and the seeds their searches started from.
DAMOFD_05G = ("SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(32,32,2,8,1)SuperResIDWE1K7(32,64,2,40,1)"
              "SuperResIDWE1K7(64,120,2,40,2)SuperResIDWE1K5(120,160,2,120,1)")
DAMOFD_25G = ("SuperConvK3BNRELU(3,24,2,2)SuperResK3K3(24,32,2,24,4)SuperResK3K3(32,56,2,16,4)"
              "SuperResK5K5(56,88,2,8,5)SuperResK1K5K1(88,128,2,8,4)")


@pytest.mark.parametrize("found, seed", [(DAMOFD_05G, SEEDS["idw"]), (DAMOFD_25G, SEEDS["res"])])
def test_ddsar_prefers_the_published_result_over_its_seed(found, seed):
    """Each published backbone is cheaper than the seed its search began from
    yet scores higher: the score must rank the search's outcome first."""
    found, seed = parse_structure(found), parse_structure(seed)
    assert structure_cost(found, 224, 224)[0] < structure_cost(seed, 224, 224)[0]
    assert ddsar_score(found, 224) > ddsar_score(seed, 224)


def test_ddsar_stage_behaviour():
    blocks = parse_structure(DAMOFD_05G)
    base = stage_scores(blocks, 224)
    # Widening a stage's bottleneck raises that stage and leaves earlier ones alone.
    wider = list(blocks)
    cin, cout, stride, mid, n = wider[3].args
    wider[3] = wider[3]._replace(args=(cin, cout, stride, mid * 2, n))
    scores = stage_scores(wider, 224)
    assert scores[:3] == base[:3] and scores[3] > base[3]
    assert ddsar_score(wider, 224) > ddsar_score(blocks, 224)
    with pytest.raises(ValueError, match="five-block"):
        ddsar_score(blocks[:4], 224)


def test_mutation_keeps_strides_and_chains_widths():
    rng = random.Random(1)
    blocks = parse_structure(SEEDS["res"])
    for _ in range(50):
        blocks = mutate(blocks, rng, "res", num_replaces=2)
        check_chain(blocks)  # each block takes the previous block's width
        stride = 1
        for b in blocks:
            stride *= b.args[2]
        assert stride == 32
        assert all(b.args[-1] < 6 for b in blocks[1:])
    choices = block_choices(parse_structure(SEEDS["idw"])[2], "idw")
    assert {c.name for c in choices} >= {"SuperResIDWE6K7", "SuperResIDWE1K3"}
    assert split_deep_blocks(parse_structure("SuperConvK3BNRELU(3,8,2,1)SuperResK3K3(8,16,2,8,7)"))[1:] == \
        parse_structure("SuperResK3K3(8,16,2,8,3)SuperResK3K3(16,16,1,8,4)")


def test_tiny_search_respects_budget():
    cfg = SearchConfig(budget_flops=420e6, input_size=64, iters=400, population=40, seed=3)
    bests = []
    best = search(cfg, lambda it, b, size: bests.append(b))
    first = next(b for b in bests if b is not None)
    assert best.score > first.score  # evolution improved on its first valid child
    limit = 420e6 * 64 * 64 / VGA_PIXELS
    assert best.flops <= limit
    net = MasterNet(best.structure)
    assert count_flops(net, [1, 3, 64, 64]) == best.flops


def test_search_cli_writes_a_buildable_structure(tmp_path, capsys):
    out = tmp_path / "struct.txt"
    best = search_tool.main(["--budget_flops", "0.45G", "--input_size", "96", "--iters", "200",
                             "--population", "20", "--seed", "0", "--output", str(out)])
    text = out.read_text().strip()
    assert text == best.structure
    assert "best structure: " + text in capsys.readouterr().out
    net = MasterNet(text)
    net.eval()
    feats = net(paddle.zeros([1, 3, 64, 64]))
    assert [f.shape[2] for f in feats] == [16, 8, 4, 2]
    assert best.flops * VGA_PIXELS / 96 ** 2 <= 0.45e9


def test_budget_parsing_and_impossible_budget():
    assert search_tool.parse_flops("500M") == 500e6
    assert search_tool.parse_flops("2.5G") == 2.5e9
    assert search_tool.parse_flops("65e6") == 65e6
    with pytest.raises(Exception, match="not a FLOPs value"):
        search_tool.parse_flops("lots")
    with pytest.raises(ValueError, match="raise --budget_flops"):
        search(SearchConfig(budget_flops=1e6, input_size=64, iters=30, population=10))
