"""Weight decay exemptions (``Recipe.decay_exempt``): ``alibaba`` exempts exactly the
parameters alibaba-mmai-research's optimiser gives no decay to (names holding ``bn`` or
``norm`` in HyRSM's and CLIP-FSAR's models): 100 of HyRSM's 175 trained tensors on a
ResNet-50 and 104 of CLIP-FSAR's 186 on CLIP's RN50, counted on the reference models built
from its code."""

from __future__ import annotations

import pytest
import torch

from fsarbench.training.decay_groups import decay_exempt_parameters
from fsarbench.training.finetune import build_video_method, finetune_recipe
from fsarbench.training.loop import make_optimizer
from fsarbench.training.recipe import Recipe


def _model(method: str):
    recipe = finetune_recipe(method, "ssv2-small", {"options": {"weights": "none"}})
    model = build_video_method(
        method, recipe.options, torch.device("cpu"), num_train_classes=64, dataset="ssv2-small"
    )
    trained = {id(p) for s in model.training_stages() for p in s.parameters()}
    exempt = decay_exempt_parameters(model, recipe.recipe.decay_exempt)
    names = {n for n, p in model.named_parameters() if id(p) in exempt}
    return model, trained, exempt, names


@pytest.mark.parametrize(
    "method, trained_count, exempt_count, decayed_batch_norms",
    [
        # the reference's stem BatchNorm is named "1" (Sequential(*children[:-1])), its
        # shortcut BatchNorms "downsample.1": no "bn" in either name
        (
            "hyrsm",
            175,
            100,
            ["backbone.trunk.bn1.weight", "backbone.trunk.layer2.0.downsample.1.weight"],
        ),
        ("clip-fsar", 186, 104, ["backbone.trunk.stages.1.0.shortcut.conv.bn.weight"]),
    ],
)
def test_alibaba_exempts_what_the_reference_optimiser_exempts(
    method, trained_count, exempt_count, decayed_batch_norms
):
    model, trained, exempt, names = _model(method)
    assert len(trained) == trained_count and exempt <= trained
    assert len(exempt) == exempt_count
    for name in decayed_batch_norms:
        assert name not in names
    head_norms = [n for n in names if n.startswith("inner.")]
    assert head_norms and all("norm" in n for n in head_norms)
    assert not any("embed" in n or n.endswith("scale") for n in names)


def test_recipes_set_it_for_the_alibaba_code_base_only():
    assert finetune_recipe("hyrsm", "ucf101").recipe.decay_exempt == "alibaba"
    assert finetune_recipe("clip-fsar", "hmdb51").recipe.decay_exempt == "alibaba"
    for method, dataset in (("trx", "ucf101"), ("hyrsm", "synth"), ("clip-fsar", "synth")):
        recipe = finetune_recipe(method, dataset).recipe
        assert recipe.decay_exempt == "none" and "decay_exempt" not in recipe.to_dict()
    # HMDB51's updates of 8 tasks keep the loss divided by 4: twice the decay on the mean
    assert finetune_recipe("hyrsm", "hmdb51").recipe.weight_decay == 0.002


def test_exempt_parameters_step_without_decay():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    params = list(net.parameters())
    exempt = {id(p) for p in net[1].parameters()}
    recipe = Recipe(optimizer="adam", lr=0.1, weight_decay=0.5)
    runs = {}
    for name, (wd, ex) in {
        "grouped": (0.5, exempt),
        "none": (0.0, set()),
        "all": (0.5, set()),
    }.items():
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        model.load_state_dict(net.state_dict())
        ids = {id(p) for p in model[1].parameters()} if ex else set()
        opt = make_optimizer(
            Recipe(optimizer="adam", lr=0.1, weight_decay=wd), list(model.parameters()), ids
        )
        model(torch.ones(2, 4)).square().sum().backward()
        opt.step()
        runs[name] = model
    grouped, plain, decayed = runs["grouped"], runs["none"], runs["all"]
    assert torch.equal(grouped[1].weight, plain[1].weight)  # no decay on the norm
    assert torch.equal(grouped[0].weight, decayed[0].weight)  # the recipe's on the rest
    assert not torch.equal(grouped[0].weight, plain[0].weight)
    assert len(make_optimizer(recipe, params, exempt).param_groups) == 2
    assert len(make_optimizer(recipe, params).param_groups) == 1


def test_a_run_with_exemptions_resumes_to_the_same_weights(tmp_path):
    """Two parameter groups in the optimiser's state: an interrupted run resumes to the
    weights of an uninterrupted one."""
    from finetune_fixtures import TINY_SYNTH, tiny_recipe

    from fsarbench.data.datasets import get_dataset
    from fsarbench.training.finetune import ClipSplit, finetune

    synth = get_dataset("synth", root=tmp_path / "synth", config=TINY_SYNTH)
    tiny = tiny_recipe(recipe={"steps": 3, "val_every": 1, "val_episodes": 2, "val_shot": 1,
                               "weight_decay": 0.1, "decay_exempt": "alibaba"})  # fmt: skip
    recipe = finetune_recipe("protonet", "synth", tiny)

    def run(out, **kw):
        model = build_video_method("protonet", recipe.options, torch.device("cpu"), seed=0)
        splits = [
            ClipSplit(synth.videos(s), synth.variant, synth.flip_ok) for s in ("train", "val")
        ]
        finetune(model, *splits, recipe, out_dir=out, progress=False, **kw)
        return model

    whole = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", stop_after=2)
    resumed = run(tmp_path / "b")
    for k, v in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    assert decay_exempt_parameters(whole, "alibaba")  # the backbone's BatchNorms
