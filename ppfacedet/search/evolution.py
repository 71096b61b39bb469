"""Evolutionary search over MasterNet structures under a FLOPs budget
(the loop of DamoFD's ``evolution_search.py``).

Each iteration mutates the seed (while the population is small) or a random
member, drops the child if it breaks a constraint (FLOPs budget, total
sub-layers, five blocks), scores it with DDSAR and adds it; when the
population outgrows its size the lowest-scoring member leaves.
"""
import math
import random
from dataclasses import dataclass, field

from ..modeling.backbones.masternet import format_structure, parse_structure, structure_cost
from .ddsar import STAGE_WEIGHTS, ddsar_score
from .space import SEEDS, mutate, num_layers

# The resolution the published FLOPs are quoted at ("VGA").
VGA_PIXELS = 640 * 480


@dataclass
class Candidate:
    blocks: list
    score: float
    flops: int   # at the search input size
    params: int

    @property
    def structure(self):
        return format_structure(self.blocks)


@dataclass
class SearchConfig:
    budget_flops: float            # backbone FLOPs budget at VGA (640x480)
    input_size: int = 224          # square search resolution (official: 224)
    iters: int = 96000
    population: int = 512
    max_layers: int = 14
    space: str = "idw"
    seed_structure: str = None
    seed: int = 0
    stats: dict = field(default_factory=lambda: {"over_budget": 0, "too_deep": 0, "wrong_blocks": 0})

    def budget_at_search_size(self):
        """The VGA budget scaled to the search input by area, as the official
        scripts do by hand (65e6 @224 for a 403M @VGA backbone)."""
        return self.budget_flops * self.input_size ** 2 / VGA_PIXELS


def evaluate(blocks, cfg):
    """A Candidate, or None (and a reason counted in cfg.stats) if it breaks a constraint."""
    if len(blocks) != len(STAGE_WEIGHTS):
        cfg.stats["wrong_blocks"] += 1
        return None
    if num_layers(blocks) > cfg.max_layers:
        cfg.stats["too_deep"] += 1
        return None
    flops, params = structure_cost(blocks, cfg.input_size, cfg.input_size)
    if flops > cfg.budget_at_search_size():
        cfg.stats["over_budget"] += 1
        return None
    return Candidate(blocks, ddsar_score(blocks, cfg.input_size), flops, params)


def search(cfg, progress=None):
    """Run the search; returns the best Candidate. ``progress`` (optional) is
    called as progress(iteration, best Candidate or None, population size)."""
    rng = random.Random(cfg.seed)
    seed = parse_structure(cfg.seed_structure or SEEDS[cfg.space])
    # Like the official loop, the seed itself need not fit: it is only mutated.
    population, best = [], None
    for it in range(cfg.iters):
        while len(population) > cfg.population:
            population.pop(min(range(len(population)), key=lambda i: population[i].score))
        if len(population) <= 10:
            child = mutate(seed, rng, cfg.space, num_replaces=1)
        else:
            child = mutate(rng.choice(population).blocks, rng, cfg.space, num_replaces=2)
        candidate = evaluate(child, cfg)
        if candidate is not None and math.isfinite(candidate.score):
            population.append(candidate)
            if best is None or candidate.score > best.score:
                best = candidate
        if progress is not None:
            progress(it, best, len(population))
    if best is None:
        seed_flops = structure_cost(seed, cfg.input_size, cfg.input_size)[0]
        raise ValueError(
            f"no mutation of the seed {format_structure(seed)} ({seed_flops / 1e6:.1f} MFLOPs at "
            f"{cfg.input_size}x{cfg.input_size}, ~{seed_flops * VGA_PIXELS / cfg.input_size ** 2 / 1e6:.0f}M at VGA) "
            f"met the budget and the {cfg.max_layers}-layer limit in {cfg.iters} iterations "
            f"(rejections: {cfg.stats}); raise --budget_flops or --iters, or give a smaller seed")
    return best
