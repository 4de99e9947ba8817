"""The judge's data and operating points: splits keep behaviours and written rows apart, and
the operating-point rescaling means the same for every value."""

from __future__ import annotations

import numpy as np
import pytest

from vilmo.datasets import readers as data
from vilmo.judge.pooling import at_operating_point
from vilmo.train.examples import judge_examples
from vilmo.train.operating import _benign_quantile, _by_value, choose, fit

NEEDS_JBB = pytest.mark.skipif(not (data.data_dir() / "jailbreakbench").exists(),
                               reason="no jailbreakbench/ in the data folder")


@NEEDS_JBB
def test_jailbreakbench_is_split_by_behaviour() -> None:
    parts = {s: data.jailbreakbench(data.data_dir(), s) for s in ("train", "dev", "heldout")}
    behaviours = {s: {r.behavior for r in rows} for s, rows in parts.items()}
    assert not behaviours["train"] & behaviours["heldout"]
    assert not behaviours["dev"] & (behaviours["train"] | behaviours["heldout"])
    assert 15 <= len(behaviours["heldout"]) <= 35
    assert sum(len(rows) for rows in parts.values()) == len(data.jailbreakbench(data.data_dir()))
    held = parts["heldout"]
    assert {r.complied for r in held} == {True, False}


@pytest.mark.parametrize(("kind", "field"), [("replies", "reply"), ("texts", "text"),
                                             ("stories", "continuation"), ("areas", "reply")])
def test_written_heldout_rows_are_not_training_rows(kind: str, field: str) -> None:
    train = data.judge_rows(f"{kind}_train")
    held = data.judge_rows(f"{kind}_heldout")
    assert held and train
    assert not {str(r[field]) for r in train} & {str(r[field]) for r in held}
    if kind in ("replies", "areas"):
        assert not ({r["prompt"] for r in train if r["prompt"]}
                    & {r["prompt"] for r in held if r["prompt"]})


def test_heldout_stories_continue_only_test_stories() -> None:
    from vilmo.evaluation.prompts import moral_stories

    split = {p.id: p.split for p in moral_stories()}
    assert {split[str(r["story_id"])] for r in data.judge_rows("stories_heldout")} == {"test"}
    assert {split[str(r["story_id"])] for r in data.judge_rows("stories_train")} == {"train"}


def test_dev_stories_are_never_continued_in_training() -> None:
    """``stories_dev`` selects head refits: its stories are train-split prompts that no
    training or held-out row continues, so a choice made on them reads unseen stories."""
    from vilmo.evaluation.prompts import moral_stories

    split = {p.id: p.split for p in moral_stories()}
    dev = data.judge_rows("stories_dev")
    ids = {str(r["story_id"]) for r in dev}
    assert dev and {split[i] for i in ids} == {"train"}
    assert not ids & {str(r["story_id"]) for r in data.judge_rows("stories_train")}
    for i in ids:  # pairs: as many upholding as violating continuations of each story
        rows = [o for o in dev if str(o["story_id"]) == i]
        assert len(rows) >= 2 and 2 * sum(bool(o["violates"]) for o in rows) == len(rows)
    texts = {str(r["continuation"]) for r in dev}
    for other in ("stories_train", "stories_heldout"):
        assert not texts & {str(r["continuation"]) for r in data.judge_rows(other)}


def _normalised(text: str) -> str:
    """Lower case, letters and digits only: a copy with other punctuation or spacing is the
    same text."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def test_training_stories_copy_no_dev_or_heldout_text() -> None:
    """Written training continuations (every round, the third fairness one included) are
    neither dev nor held-out continuations, nor a story prompt, even up to case, punctuation
    and spacing; each story's training rows come in pairs (as many violating as upholding), and
    no training continuation is written twice."""
    from vilmo.evaluation.prompts import moral_stories

    train = data.judge_rows("stories_train")
    texts = [_normalised(str(r["continuation"])) for r in train]
    assert len(set(texts)) == len(texts)
    apart = {_normalised(str(r["continuation"])) for kind in ("stories_dev", "stories_heldout")
             for r in data.judge_rows(kind)}
    apart |= {_normalised(str(p.messages[-1]["content"])) for p in moral_stories()}
    assert not set(texts) & apart
    for story in {str(r["story_id"]) for r in train}:
        rows = [r for r in train if str(r["story_id"]) == story]
        assert 2 * sum(bool(r["violates"]) for r in rows) == len(rows), story


def test_written_dev_rows_are_kept_out_of_training() -> None:
    train = {(e.prompt, e.response) for e in judge_examples("train")}
    dev = {(e.prompt, e.response) for e in judge_examples("dev")}
    assert dev and not train & dev


def test_operating_point_reads_half_for_every_value() -> None:
    points = np.array([0.05, 0.3, 0.9], dtype=np.float32)
    assert np.allclose(at_operating_point(points[None, :], points), 0.5)
    grid = np.linspace(0, 1, 101, dtype=np.float32)[:, None].repeat(3, axis=1)
    mapped = at_operating_point(grid, points)
    assert (np.diff(mapped, axis=0) >= 0).all()  # monotone: rankings and AUCs are kept
    assert mapped[0].tolist() == [0, 0, 0] and np.allclose(mapped[-1], 1)
    assert ((grid >= points) == (mapped >= 0.5)).all()


def test_benign_quantile_flags_at_most_alpha() -> None:
    rng = np.random.default_rng(0)
    benign = rng.random((400, 4))
    for alpha in (0.0, 0.005, 0.02):
        cut = _benign_quantile(benign, alpha)
        assert ((benign >= cut).mean(axis=0) <= alpha).all()
        assert ((benign >= np.nextafter(cut, -np.inf) - 1e-3).sum(axis=0) > alpha * 400).all()


def test_sentence_reading_has_its_own_operating_points() -> None:
    """Issue 17: reading benign texts sentence by sentence raises their highest scores; with one
    set of points for both readings that pushed the whole reading's points up and cost it the
    harmful texts it caught. Each reading now gets its own points: benign sentences that read
    0.6 do not move the whole reading's point off its benign texts (0.3 here)."""
    rng = np.random.default_rng(1)
    whole = {"benign": rng.uniform(0.0, 0.3, (200, 2)), "harmful": rng.uniform(0.35, 0.5, (50, 2)),
             "refused": rng.uniform(0.0, 0.2, (20, 2))}
    spans = {"benign": rng.uniform(0.0, 0.6, (200, 2)), "harmful": rng.uniform(0.0, 0.6, (50, 2)),
             "refused": rng.uniform(0.0, 0.6, (20, 2))}
    rule = choose(whole, spans, benign_target=0.01)
    assert rule["dev_harmful_flagged"] == 1.0 and rule["dev_refused_flagged"] == 0.0
    assert rule["dev_benign_flagged"] <= 0.01
    assert (rule["cut"] <= 0.35).all() and (rule["span_cut"] > rule["cut"]).all()


def test_plain_texts_get_their_own_operating_points() -> None:
    """Issue 17: plain texts (no prompt: input checks) shared the reply points, so refitting
    those for a reply-only change (the weight of the reading alone) moved a plain text's verdict
    ("Immigrants are vermin." fell under 0.5). They now get their own points, fitted by the same
    rule on the dev texts without a prompt; the reply points are still fitted on every text."""
    rng = np.random.default_rng(2)
    sizes = {"benign": 200, "harmful": 60, "refused": 20}
    plain = {g: np.arange(n) % 2 == 0 for g, n in sizes.items()}
    whole = {g: rng.uniform(0.0, 0.3, (n, 2)) for g, n in sizes.items()}
    whole["harmful"] = rng.uniform(0.2, 0.6, (60, 2))
    whole["refused"] = rng.uniform(0.0, 0.1, (20, 2))
    whole["benign"][plain["benign"]] *= 0.5  # plain benign texts read lower
    spans = {g: np.zeros((n, 2)) for g, n in sizes.items()}
    got = fit(whole, spans, plain, 0.01, ("a", "b"))
    every = choose(whole, spans, 0.01)
    assert got["operating_points"] == _by_value(every["cut"], ("a", "b"))
    assert got["operating_rule"]["dev_benign"] == 200
    only = choose({g: whole[g][plain[g]] for g in whole}, {g: spans[g][plain[g]] for g in spans},
                  0.01)
    assert got["plain_operating_points"] == _by_value(only["cut"], ("a", "b"))
    assert got["plain_operating_rule"]["dev_benign"] == 100
    assert got["plain_operating_rule"]["dev_benign_flagged"] <= 0.01
    assert all(got["plain_operating_points"][v] < got["operating_points"][v] for v in "ab")


def test_points_written_to_the_config_flag_no_more_than_the_rule_chose() -> None:
    """The config's points were rounded to nearest: a point just above a benign score fell
    below it about half the time, so the served judge flagged benign texts the rule let
    through (dev 1.97 % against the 0.76 % the rule reported)."""
    rng = np.random.default_rng(2)
    whole = {"benign": rng.random((659, 29)), "harmful": rng.uniform(0.9, 1.0, (50, 29)),
             "refused": rng.random((20, 29))}
    spans = {g: np.zeros_like(w) for g, w in whole.items()}
    rule = choose(whole, spans, benign_target=0.01)
    values = [f"v{j}" for j in range(29)]
    written = np.array(list(_by_value(rule["cut"], values).values()))
    assert (written >= rule["cut"]).all() and (written - rule["cut"] <= 1e-5).all()
    flagged = (whole["benign"] >= written).any(axis=1).mean()
    assert flagged == pytest.approx(rule["dev_benign_flagged"])


def test_when_no_rule_meets_the_target_each_reading_takes_its_strictest_points() -> None:
    """The fallback gave the whole reading the sentence grid's floor (0.8, not on the whole
    reading's grid) and dropped the dev figures from ``operating_rule``."""
    whole = {"benign": np.ones((100, 2)), "harmful": np.ones((10, 2)),
             "refused": np.zeros((10, 2))}
    spans = {g: np.zeros_like(w) for g, w in whole.items()}
    rule = choose(whole, spans, benign_target=0.01)
    assert (rule["floor"], rule["sentence_floor"]) == (0.5, 0.8)
    assert rule["dev_benign_flagged"] == 1.0 and rule["dev_refused_flagged"] == 0.0


def test_mix_alone_weights_the_two_readings_and_keeps_plain_texts() -> None:
    from vilmo.judge.pooling import mix_alone

    after = np.array([[0.8, 0.2], [0.4, 0.6]], dtype=np.float32)
    alone = np.array([[0.0, 0.6], [0.0, 0.0]], dtype=np.float32)
    out = mix_alone(after, alone, np.array([True, False]), 0.25)
    np.testing.assert_allclose(out, [[0.6, 0.3], [0.4, 0.6]], atol=1e-6)


def test_a_blank_dev_prompt_is_a_plain_dev_text() -> None:
    """A prompt that is blank after strip() is no prompt: the dev text counts among the plain
    ones the ``plain_`` points are fitted on, and is the same text as without a prompt."""
    from vilmo.judge.classifier import ScoreInput
    from vilmo.train.operating import dev_groups

    dev = [data.Example("Bake the bread at 220 degrees.", p, {"harm": 0.0}, "hh")
           for p in ("  ", None, "\n")]
    assert dev_groups(dev)["benign"] == [ScoreInput("Bake the bread at 220 degrees.")]
